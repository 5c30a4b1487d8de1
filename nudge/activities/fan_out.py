"""Starting or signalling many runs from one activity, a bounded number at a time."""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

# How many runs one activity starts or signals at once.
FAN_OUT_CONCURRENCY = 64


async def signal_runs(client: Client, workflow_ids: list[str], signal: str, arg: Any) -> None:
    """Signal runs by their deterministic ids; a run that already ended is fine."""
    limit = asyncio.Semaphore(FAN_OUT_CONCURRENCY)

    async def send(workflow_id: str) -> None:
        async with limit:
            handle: WorkflowHandle[Any, Any] = client.get_workflow_handle(workflow_id)
            try:
                await handle.signal(signal, arg)
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise

    await asyncio.gather(*(send(w) for w in workflow_ids))
