"""A Temporal that accepts connections and never answers does not hold requests: what
the request could not relay within its budget is left to the workers' relay."""

from __future__ import annotations

import socket
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from nudge.models.tables import OutboxEntry
from nudge.runs import outbox as relay_module
from nudge.settings import Settings
from tests.conftest import TenantKeys, api_client
from tests.utils.outage import pending
from tests.utils.receivers import HOST


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts and then says nothing, like a Temporal frozen mid-way."""
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    listener.close()


@pytest.fixture
async def frozen_temporal(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    silent_server: int,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setattr(relay_module, "INLINE_BUDGET", timedelta(seconds=0.5))
    frozen = await Client.connect(
        f"{HOST}:{silent_server}", lazy=True, data_converter=pydantic_data_converter
    )
    async with api_client(settings, sessions, frozen) as client:
        yield client


async def test_a_notification_is_queued_although_temporal_never_answers(
    frozen_temporal: httpx.AsyncClient,
    tenant: TenantKeys,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    admin = tenant.headers()
    await frozen_temporal.put("/v1/contacts/ada", json={"name": "Ada"}, headers=admin)
    await frozen_temporal.put("/v1/channels/log", json={"type": "log"}, headers=admin)

    answer = await frozen_temporal.post(
        "/v1/notifications",
        json={"contact_id": "ada", "channel": "log", "message": {"kind": "text", "text": "Hi"}},
        headers=tenant.headers("service"),
    )

    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "queued"
    assert await pending(sessions, tenant) == 1  # the run's start waits for the relay
    async with sessions() as session:
        entry = (
            await session.execute(select(OutboxEntry).where(OutboxEntry.tenant_id == tenant.id))
        ).scalar_one()
    # Cut off by the budget, not answered: no try was recorded, and the request's lease
    # hands it to the relay loop when it lapses (an SDK timeout would have come much later).
    assert (entry.tries, entry.last_error) == (0, None)
    assert entry.leased_until is not None
