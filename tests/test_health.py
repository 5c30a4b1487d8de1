"""`/healthz` tells a load balancer (and `nudge dev`) whether the API can do its work."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from nudge.models.db import create_engine, session_factory
from nudge.settings import Settings
from tests.conftest import api_client


async def test_healthz_is_ok_when_database_and_temporal_answer(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], time_env: WorkflowEnvironment
) -> None:
    async with api_client(settings, sessions, time_env.client) as api:
        response = await api.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "temporal": "ok"}


async def test_healthz_names_an_unreachable_database(
    settings: Settings, time_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'missing' / 'nowhere.sqlite3'}")
    async with api_client(settings, session_factory(engine), time_env.client) as api:
        response = await api.get("/healthz")
    await engine.dispose()
    assert response.status_code == 503
    assert response.json()["database"].startswith("unreachable")
    assert response.json()["temporal"] == "ok"
