"""The `nudge` command line."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from nudge.errors import Conflict, InvalidInput, NotFound, NudgeError
from nudge.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

app = typer.Typer(
    help="Nudge: durable follow-ups and customer workflows on Temporal.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
tenant_app = typer.Typer(help="Manage tenants.", no_args_is_help=True)
key_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
secrets_app = typer.Typer(help="Manage the encryption of stored secrets.", no_args_is_help=True)
app.add_typer(tenant_app, name="tenant")
app.add_typer(key_app, name="key")
app.add_typer(secrets_app, name="secrets")

T = TypeVar("T")


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"nudge: {message}", err=True)
    return typer.Exit(code)


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise fail(f"invalid settings: {problems}") from None


def _run(work: Callable[[], T]) -> T:
    """Run a command body, turning expected failures into one-line messages."""
    try:
        return work()
    except InvalidInput as exc:
        raise fail(str(exc)) from None
    except (NotFound, Conflict, NudgeError) as exc:
        raise fail(str(exc)) from None
    except ValueError as exc:  # e.g. a secret the configured keys cannot decrypt
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"{exc.strerror or exc}") from None


async def _in_transaction(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run store functions in one transaction of their own: committed when `work` succeeds."""
    from nudge.models.db import create_engine, session_factory, transaction

    engine = create_engine(settings.resolved_database_url)
    try:
        async with transaction(session_factory(engine)) as session:
            return await work(session)
    finally:
        await engine.dispose()


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every URL at INFO, query string included: a secret may ride in it.
    logging.getLogger("httpx").setLevel(logging.WARNING)


@app.command()
def dev(
    api_port: Annotated[int, typer.Option(help="Port of the HTTP API.")] = 8000,
    temporal_port: Annotated[
        int, typer.Option(help="gRPC port of the Temporal dev server.")
    ] = 7233,
    ui_port: Annotated[int, typer.Option(help="Port of the Temporal Web UI.")] = 8233,
    data_dir: Annotated[Path, typer.Option(help="Where state is kept between runs.")] = Path(
        ".nudge"
    ),
) -> None:
    """Run the whole stack on embedded defaults: Temporal dev server, worker, API, SQLite."""
    from nudge.dev.stack import DevStack

    settings = _settings(data_dir=data_dir)
    _configure_logging(settings)
    stack = DevStack(settings, api_port=api_port, temporal_port=temporal_port, ui_port=ui_port)
    raise typer.Exit(_run(stack.run))


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
) -> None:
    """Run the HTTP API (one process; run several behind a load balancer)."""
    from nudge.api.server import serve

    settings = _settings(api_host=host, api_port=port)
    _configure_logging(settings)
    settings.announce()
    _run(lambda: serve(settings))


@app.command()
def worker() -> None:
    """Run a worker: every workflow and activity. Run as many as the load needs."""
    from nudge.workers.worker import run_worker

    settings = _settings()
    _configure_logging(settings)
    settings.announce()
    _run(lambda: asyncio.run(run_worker(settings)))


@app.command()
def migrate() -> None:
    """Apply the database migrations (Alembic) up to the newest."""
    from nudge.models.db import migrate as apply_migrations

    settings = _settings()
    _run(lambda: apply_migrations(settings.resolved_database_url))
    typer.echo("database is up to date")


@tenant_app.command("create")
def tenant_create(
    slug: Annotated[str, typer.Argument(help="Short unique name, e.g. acme.")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create a tenant and its first admin key."""
    from nudge.store.tenants import create_tenant_with_key

    settings = _settings()
    key = _run(
        lambda: asyncio.run(
            _in_transaction(settings, lambda session: create_tenant_with_key(session, slug, name))
        )
    )
    if as_json:
        typer.echo(json.dumps({"tenant": slug, "api_key": key}))
    else:
        typer.echo(f"tenant {slug} created\nadmin API key (shown once): {key}")


@key_app.command("create")
def key_create(
    tenant: Annotated[str, typer.Option(help="Tenant slug.")],
    role: Annotated[str, typer.Option(help="admin, service or agent.")],
    agent: Annotated[str | None, typer.Option(help="For agent keys: the agent's id.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create another API key for a tenant."""
    from nudge.store.tenants import create_key

    settings = _settings()
    row, key = _run(
        lambda: asyncio.run(
            _in_transaction(settings, lambda session: create_key(session, tenant, role, agent))
        )
    )
    if as_json:
        typer.echo(json.dumps({"tenant": tenant, "role": role, "id": row.id, "api_key": key}))
    else:
        typer.echo(f"{role} API key {row.id} for {tenant} (shown once): {key}")


@key_app.command("revoke")
def key_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (GET /v1/api-keys lists them).")],
    tenant: Annotated[str, typer.Option(help="Tenant slug.")],
) -> None:
    """Revoke an API key: it answers 401 from now on."""
    from nudge.store.tenants import revoke_key

    settings = _settings()
    revoked = _run(
        lambda: asyncio.run(
            _in_transaction(settings, lambda session: revoke_key(session, tenant, key_id))
        )
    )
    typer.echo(f"{revoked.role} API key {revoked.prefix}… of {tenant} revoked")


@secrets_app.command("rotate")
def secrets_rotate() -> None:
    """Re-encrypt every stored secret with the newest key of NUDGE_SECRET_KEY.

    Rotate by setting NUDGE_SECRET_KEY=new,old on every process, running this once, then
    setting NUDGE_SECRET_KEY=new.
    """
    from nudge.security import SecretBox
    from nudge.store.directory import reseal_everything

    settings = _settings()

    def rotate() -> int:
        box = SecretBox(settings.secret_key_value())
        return asyncio.run(_in_transaction(settings, lambda s: reseal_everything(s, box)))

    count = _run(rotate)
    typer.echo(f"{count} secrets and channel credentials now encrypted with the newest key")


def main() -> None:
    app()
