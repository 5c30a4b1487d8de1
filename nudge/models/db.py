"""Engines, sessions and migrations for SQLite (development) and PostgreSQL (production)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _driver_url(url: str, *, asynchronous: bool) -> URL:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite" if asynchronous else "sqlite+pysqlite")
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    raise ValueError(f"unsupported database {backend!r}: use SQLite or PostgreSQL")


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # The API and the worker are separate processes writing one file: WAL lets readers
    # go on during a write, and busy_timeout makes a writer wait instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_engine(url: str) -> AsyncEngine:
    """The engine of the API and the worker. Its errors never show the statement's bound
    parameters (``hide_parameters``): they may be a secret, sealed or not, or customer data,
    and database errors end up in logs and in answers."""
    driver_url = _driver_url(url, asynchronous=True)
    if driver_url.get_backend_name() == "sqlite":
        engine = create_async_engine(driver_url, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _tune_sqlite)
        return engine
    return create_async_engine(
        driver_url, hide_parameters=True, pool_pre_ping=True, pool_size=10, max_overflow=20
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session whose work is committed on success and rolled back on any error."""
    async with sessions() as session, session.begin():
        yield session


def migrate(url: str) -> None:
    """Bring the database to the newest schema (what `nudge migrate` runs)."""
    from alembic import command
    from alembic.config import Config

    sync_url = _driver_url(url, asynchronous=False)
    if sync_url.get_backend_name() == "sqlite" and sync_url.database:
        Path(sync_url.database).parent.mkdir(parents=True, exist_ok=True)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["sqlalchemy_url"] = sync_url
    command.upgrade(config, "head")
