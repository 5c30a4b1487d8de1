"""Signalling runs by their deterministic ids; a run that has already closed is fine."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, TypeVar

from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from nudge.models.signals import PollNow, Signal

P = TypeVar("P")

# How many runs one call starts or signals at once.
FAN_OUT_CONCURRENCY = 64


async def signal_run(client: Client, workflow_id: str, signal: Signal[P], arg: P) -> bool:
    """Signal one run; False when no run with that id is open (it ended, or never started).

    A signal to a run that was just started is kept even before its first task, so a caller
    never needs to look the run up first.
    """
    handle: WorkflowHandle[Any, Any] = client.get_workflow_handle(workflow_id)
    try:
        if isinstance(arg, PollNow):
            await handle.signal(signal.name)
        else:
            await handle.signal(signal.name, arg)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def signal_runs(
    client: Client, workflow_ids: Iterable[str], signal: Signal[P], arg: P
) -> int:
    """Signal many runs, a bounded number at a time; the number of runs still open."""
    limit = asyncio.Semaphore(FAN_OUT_CONCURRENCY)

    async def send(workflow_id: str) -> bool:
        async with limit:
            return await signal_run(client, workflow_id, signal, arg)

    delivered = await asyncio.gather(*(send(w) for w in workflow_ids))
    return sum(delivered)
