"""After Temporal was unreachable for the API (`temporal_down`): what the relay tells it."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from nudge.runs.outbox import Relay
from nudge.store import outbox
from tests.conftest import TenantKeys
from tests.utils.waiting import eventually


async def pending(sessions: async_sessionmaker[AsyncSession], tenant: TenantKeys) -> int:
    """The tenant's outbox entries not yet told to Temporal."""
    async with sessions() as session:
        return await outbox.pending_count(session, tenant.id)


async def relay_all(
    client: Client, sessions: async_sessionmaker[AsyncSession], tenant: TenantKeys
) -> None:
    """Passes of a relay until the tenant's outbox is empty (what every worker's relay loop
    does)."""
    relay = Relay(client, sessions)

    async def emptied() -> bool:
        await relay.relay_due()
        return await pending(sessions, tenant) == 0

    await eventually(emptied, message="the relay empties the outbox")
