"""The outbox relay beside the worker: what the API could not tell Temporal, it tells."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from nudge.models.db import create_engine, session_factory, transaction
from nudge.runs.outbox import Relay, run_relay
from nudge.settings import Settings
from nudge.store.receipts import apply_unmatched

log = logging.getLogger(__name__)

RECEIPT_SWEEP = timedelta(seconds=15)


@contextlib.asynccontextmanager
async def outbox_relay(client: Client, settings: Settings) -> AsyncIterator[Relay]:
    """Run the relay loop while the block runs. Every worker runs one: entries are leased,
    so several relays share the work instead of repeating it."""
    engine = create_engine(settings.resolved_database_url)
    sessions = session_factory(engine)
    relay = Relay(client, sessions)
    stop = asyncio.Event()
    task = asyncio.create_task(run_relay(relay, sessions, stop), name="outbox relay")
    sweep = asyncio.create_task(sweep_receipts(sessions, stop), name="receipt sweep")
    try:
        yield relay
    finally:
        stop.set()
        await asyncio.gather(task, sweep)
        await engine.dispose()


async def sweep_receipts(sessions: async_sessionmaker[AsyncSession], stop: asyncio.Event) -> None:
    """Apply receipts that came in before their send's provider id was stored (and were not
    matched when it was, because both committed at the same moment)."""
    while not stop.is_set():
        try:
            async with transaction(sessions) as session:
                await apply_unmatched(session)
        except Exception:  # the database is away: the loop goes on when it is back
            log.exception("receipt sweep failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RECEIPT_SWEEP.total_seconds())
