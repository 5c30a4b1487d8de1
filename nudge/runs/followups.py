"""Starting and signalling follow-up runs: the poller of a definition and its record runs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TypeVar

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from nudge.models.payloads import Ending, PollerInput, RecordInput
from nudge.models.signals import STOP_POLLER, Signal
from nudge.models.tables import FollowUp
from nudge.naming import (
    FOLLOWUP_POLLER_WORKFLOW,
    FOLLOWUP_RECORD_WORKFLOW,
    Kind,
    followup_workflow_id,
    record_workflow_id,
    search_attributes,
)
from nudge.runs.signals import FAN_OUT_CONCURRENCY, signal_run, signal_runs
from nudge.settings import Settings

P = TypeVar("P")


async def start_poller(
    client: Client, settings: Settings, tenant_slug: str, followup: FollowUp
) -> None:
    """Start the follow-up's poller, or leave the running one be."""
    await client.start_workflow(
        FOLLOWUP_POLLER_WORKFLOW,
        PollerInput(
            tenant_id=followup.tenant_id,
            tenant=tenant_slug,
            followup_id=followup.id,
            time_scale=settings.time_scale,
        ),
        id=followup_workflow_id(tenant_slug, followup.id),
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=search_attributes(tenant_slug, Kind.FOLLOWUP, followup=followup.id),
        static_summary=f"Follow-up poller: {followup.name}",
    )


async def signal_poller(
    client: Client, tenant_slug: str, followup_id: str, signal: Signal[P], arg: P
) -> bool:
    """Signal the poller; False when it is not running."""
    return await signal_run(client, followup_workflow_id(tenant_slug, followup_id), signal, arg)


async def signal_record(
    client: Client,
    tenant_slug: str,
    followup_id: str,
    reconciliation_id: str,
    signal: Signal[P],
    arg: P,
) -> bool:
    """Signal one record's run; False when it is not running."""
    workflow_id = record_workflow_id(tenant_slug, followup_id, reconciliation_id)
    return await signal_run(client, workflow_id, signal, arg)


async def signal_records(
    client: Client,
    tenant_slug: str,
    followup_id: str,
    reconciliation_ids: Sequence[str],
    signal: Signal[P],
    arg: P,
) -> int:
    """Signal many records' runs; the number still open."""
    ids = [record_workflow_id(tenant_slug, followup_id, rid) for rid in reconciliation_ids]
    return await signal_runs(client, ids, signal, arg)


async def start_records(
    client: Client,
    task_queue: str,
    followup_name: str,
    records: Sequence[RecordInput],
    on_started: Callable[[RecordInput], None] = lambda _: None,
) -> None:
    """Start each record's run, a bounded number at a time.

    A run that is already open is left be (``USE_EXISTING``), so a retried poll starts
    nothing twice. ``on_started`` is called for each start that Temporal acknowledged, also
    when a later one fails.
    """
    limit = asyncio.Semaphore(FAN_OUT_CONCURRENCY)

    async def start(record: RecordInput) -> None:
        async with limit:
            await client.start_workflow(
                FOLLOWUP_RECORD_WORKFLOW,
                record,
                id=record_workflow_id(record.tenant, record.followup_id, record.reconciliation_id),
                task_queue=task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                search_attributes=search_attributes(
                    record.tenant,
                    Kind.FOLLOWUP_RECORD,
                    followup=record.followup_id,
                    record=record.reconciliation_id,
                ),
                static_summary=f"{followup_name} · {record.reconciliation_id}",
            )
            on_started(record)

    await asyncio.gather(*(start(r) for r in records))


async def apply_status(
    client: Client, settings: Settings, tenant_slug: str, followup: FollowUp, was: str, by: str
) -> None:
    """Start or stop the poller to match the follow-up's (committed) status; ``was`` is the
    status before the change, ``by`` who made it."""
    if followup.status == "active" and was != "active":
        await start_poller(client, settings, tenant_slug, followup)
    elif followup.status != "active" and was == "active":
        reason = "follow-up deleted" if followup.status == "deleted" else "follow-up deactivated"
        await signal_poller(
            client, tenant_slug, followup.id, STOP_POLLER, Ending(by=by, reason=reason)
        )
