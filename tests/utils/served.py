"""The API served over real HTTP on 127.0.0.1, for callers that are not the test itself
(providers' fakes posting receipts and messages to the webhook URL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from nudge.api.app import create_app
from nudge.settings import Settings


@asynccontextmanager
async def served_api(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    temporal: Client,
    port: int,
) -> AsyncIterator[str]:
    """Serve the API on ``port`` in this event loop (the database sessions belong to it);
    yields its base URL, which ``settings.public_url`` must be for signatures to match."""
    app = create_app(settings, sessions=sessions, temporal=temporal)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # raises why it could not start
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
