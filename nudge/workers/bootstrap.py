"""One-off setup used by the CLI and the dev stack: tenants and keys."""

from __future__ import annotations

from nudge.models.db import create_engine, session_factory, transaction
from nudge.settings import Settings
from nudge.store.tenants import Role, create_api_key, create_tenant, find_tenant, get_tenant


async def create_tenant_with_key(settings: Settings, slug: str, name: str | None) -> str:
    engine = create_engine(settings.resolved_database_url)
    try:
        async with transaction(session_factory(engine)) as session:
            tenant = await create_tenant(session, slug, name)
            return await create_api_key(session, tenant, "admin")
    finally:
        await engine.dispose()


async def create_key(settings: Settings, slug: str, role: str) -> str:
    engine = create_engine(settings.resolved_database_url)
    try:
        async with transaction(session_factory(engine)) as session:
            tenant = await get_tenant(session, slug)
            return await create_api_key(session, tenant, role)  # type: ignore[arg-type]
    finally:
        await engine.dispose()


async def ensure_demo_tenant(
    settings: Settings, key_file_name: str = "demo-api-key"
) -> tuple[str, bool]:
    """The demo tenant's admin key, creating both on first start.

    The key is kept in a file under the data dir (development only) so that later
    starts can print it again; only its hash is in the database.
    Returns the key and whether the tenant was created now.
    """
    key_file = settings.data_dir / key_file_name
    engine = create_engine(settings.resolved_database_url)
    try:
        async with transaction(session_factory(engine)) as session:
            tenant = await find_tenant(session, "demo")
            if tenant is not None and key_file.exists():
                return key_file.read_text().strip(), False
            created = tenant is None
            if tenant is None:
                tenant = await create_tenant(session, "demo", "Demo tenant")
            key: str = await create_api_key(session, tenant, "admin")
    finally:
        await engine.dispose()
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    return key, created


__all__ = ["Role", "create_key", "create_tenant_with_key", "ensure_demo_tenant"]
