"""Process settings, read from ``NUDGE_*`` environment variables."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from limits import parse
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

# Where rate-limit counters may live: one process's memory, or Redis shared by every API process.
RATE_LIMIT_SCHEMES = ("memory", "redis", "rediss", "redis+unix", "redis+cluster", "redis+sentinel")


class Settings(BaseSettings):
    """Everything a Nudge process needs to know about its surroundings."""

    model_config = SettingsConfigDict(env_prefix="NUDGE_", extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    data_dir: Path = Field(default=Path(".nudge"), description="Where `nudge dev` keeps its state.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; defaults to SQLite under the data dir."
    )
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    task_queue: str = "nudge"
    time_scale: float = Field(
        default=1.0,
        gt=0,
        description="Divides every schedule duration; development and acceptance runs only.",
    )
    secret_key: SecretStr | None = Field(
        default=None, description="Fernet key that encrypts tenant secrets at rest."
    )
    public_url: str = Field(
        default="http://localhost:8000",
        description="Base URL of the API as recipients reach it (card button links).",
    )
    egress_allow: str = Field(
        default="",
        description="CIDRs and host names that calls made for tenants may reach although they"
        " are loopback or private (comma-separated; empty in production).",
    )
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    log_level: str = "INFO"
    rate_limit_storage: str = Field(
        default="memory://",
        description="Where rate-limit counters live: `memory://` (one API process) or"
        " `redis://host:6379` (shared, so limits hold across API processes).",
    )
    rate_limit_key_prefix: str = Field(
        default="nudge", min_length=1, description="Prefix of every rate-limit counter's key."
    )
    rate_limit_events: str = Field(
        default="200/second",
        description="Events per tenant, all `POST /v1/events/*` routes together.",
    )
    rate_limit_notifications: str = Field(
        default="50/second", description="Sends (`POST /v1/notifications`) per tenant."
    )
    rate_limit_poll: str = Field(
        default="10/minute",
        description="Poll-now requests (`POST /v1/followups/{id}/poll`) per follow-up.",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="Bearer token that `/metrics` of the API and the worker require; unset,"
        " they are open like `/healthz` (they show no tenant's data).",
    )
    worker_metrics_address: str = Field(
        default="127.0.0.1:9464",
        description="host:port of the worker's `/metrics`; empty turns it off, port 0 takes"
        " a free port.",
    )
    worker_cached_runs: int = Field(
        default=1000,
        ge=1,
        description="How many workflow runs a worker keeps in memory between their tasks (the"
        " SDK's `max_cached_workflows`). An event for a run not kept replays its history"
        " first; more costs memory.",
    )

    @field_validator("rate_limit_events", "rate_limit_notifications", "rate_limit_poll")
    @classmethod
    def _a_rate_limit(cls, value: str) -> str:
        # The `limits` syntax: "200/second", "50 per second", "10/minute", "1000/2 hours".
        if parse(value).amount < 1:  # parse's ValueError names the string it could not read
            raise ValueError(f"{value!r} lets nothing through; allow at least 1")
        return value.strip()

    @field_validator("rate_limit_storage")
    @classmethod
    def _a_rate_limit_storage(cls, value: str) -> str:
        scheme = value.partition("://")[0].removeprefix("async+")
        if "://" not in value or scheme not in RATE_LIMIT_SCHEMES:
            raise ValueError(
                f"{value!r} is no rate-limit storage; use memory:// or redis://host:port"
            )
        return value

    @field_validator("metrics_token")
    @classmethod
    def _a_metrics_token(cls, value: SecretStr | None) -> SecretStr | None:
        # Set but empty (`NUDGE_METRICS_TOKEN=` in a compose file) means unset.
        if value is not None and not value.get_secret_value().strip():
            return None
        return value

    @field_validator("worker_metrics_address")
    @classmethod
    def _a_metrics_address(cls, value: str) -> str:
        value = value.strip()
        if value:
            host, _, port = value.rpartition(":")
            if not host or not port.isdigit() or int(port) > 65535:
                raise ValueError(f"{value!r} is no host:port, e.g. 127.0.0.1:9464 (empty: off)")
        return value

    @property
    def worker_metrics_bind(self) -> tuple[str, int] | None:
        """(host, port) of the worker's `/metrics`, or None when it is off."""
        if not self.worker_metrics_address:
            return None
        host, _, port = self.worker_metrics_address.rpartition(":")
        return host.strip("[]"), int(port)

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.env == "production":
            if self.time_scale != 1:
                raise ValueError("NUDGE_TIME_SCALE must be 1 when NUDGE_ENV=production")
            if self.secret_key is None:
                raise ValueError("NUDGE_SECRET_KEY is required when NUDGE_ENV=production")
            if self.database_url is None or self.database_url.startswith("sqlite"):
                raise ValueError(
                    "NUDGE_DATABASE_URL must name PostgreSQL when NUDGE_ENV=production"
                )
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+pysqlite:///{(self.data_dir / 'nudge.sqlite3').resolve()}"

    def secret_key_value(self) -> str:
        """The encryption key, or a development key kept under the data dir."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        return _development_secret_key(self.data_dir)

    def announce(self) -> None:
        """Log loudly what a reader of the logs must not miss."""
        if self.time_scale != 1:
            log.warning(
                "NUDGE_TIME_SCALE=%s: every schedule runs %s times faster than configured. "
                "This is for development and acceptance runs only.",
                self.time_scale,
                self.time_scale,
            )


def _development_secret_key(data_dir: Path) -> str:
    from cryptography.fernet import Fernet

    path = data_dir / "secret.key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key().decode()
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key
