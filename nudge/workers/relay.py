"""The outbox relay beside the worker: what the API could not tell Temporal, it tells."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from temporalio.client import Client

from nudge.models.db import create_engine, session_factory
from nudge.runs.outbox import Relay, run_relay
from nudge.settings import Settings


@contextlib.asynccontextmanager
async def outbox_relay(client: Client, settings: Settings) -> AsyncIterator[Relay]:
    """Run the relay loop while the block runs. Every worker runs one: entries are leased,
    so several relays share the work instead of repeating it."""
    engine = create_engine(settings.resolved_database_url)
    sessions = session_factory(engine)
    relay = Relay(client, sessions)
    stop = asyncio.Event()
    task = asyncio.create_task(run_relay(relay, sessions, stop), name="outbox relay")
    try:
        yield relay
    finally:
        stop.set()
        await task
        await engine.dispose()
