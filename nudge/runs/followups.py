"""Starting and signalling follow-up runs: the poller of a definition and its record runs.

What the API changes is staged in the outbox with the change (``stage_*``) and relayed after
the commit; the poller's activities start and signal record runs directly, being retried
by Temporal until they have.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TypeVar

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from nudge.models.payloads import ButtonPress, Ending, PollerInput, RecordInput
from nudge.models.signals import POLL_NOW, PRESS_BUTTON, STOP_POLLER, STOP_RECORD, Signal
from nudge.models.tables import FollowUp, FollowUpRecord, OutboxEntry
from nudge.naming import (
    FOLLOWUP_POLLER_WORKFLOW,
    FOLLOWUP_RECORD_WORKFLOW,
    Kind,
    followup_workflow_id,
    record_workflow_id,
    search_attributes,
)
from nudge.runs.outbox import start_options
from nudge.runs.signals import FAN_OUT_CONCURRENCY, signal_run, signal_runs
from nudge.settings import Settings
from nudge.store import outbox
from nudge.store.records import stop_following

P = TypeVar("P")


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


async def stage_status(
    session: AsyncSession,
    settings: Settings,
    tenant_slug: str,
    followup: FollowUp,
    was: str,
    by: str,
) -> list[OutboxEntry]:
    """Start or stop the poller to match the follow-up's status once ``session`` commits;
    ``was`` is the status before the change, ``by`` who made it.

    A stop ends every record still followed in the same transaction, so the database holds
    it at once (each attempt checks it before it sends), and signals each record's run.
    """
    if followup.status == "active" and was != "active":
        return [_stage_poller_start(session, settings, tenant_slug, followup)]
    if followup.status != "active" and was == "active":
        reason = "follow-up deleted" if followup.status == "deleted" else "follow-up deactivated"
        stop = Ending(by=by, reason=reason)
        records = await stop_following(session, followup.tenant_id, followup.id, stop)
        return [
            _stage_poller_signal(session, tenant_slug, followup, STOP_POLLER.name, stop),
            *(stage_record_signal(session, tenant_slug, r, STOP_RECORD, stop) for r in records),
        ]
    return []


def stage_poll_now(session: AsyncSession, tenant_slug: str, followup: FollowUp) -> OutboxEntry:
    """Ask the poller to poll at once (a new version to apply) once ``session`` commits."""
    return _stage_poller_signal(session, tenant_slug, followup, POLL_NOW.name, None)


def stage_record_signal(
    session: AsyncSession,
    tenant_slug: str,
    record: FollowUpRecord,
    signal: Signal[Ending],
    ending: Ending,
    *,
    event_key: str | None = None,
) -> OutboxEntry:
    """A signal to one record's run, meant for its generation, once ``session`` commits."""
    return outbox.add_signal(
        session,
        tenant_id=record.tenant_id,
        workflow_id=record_workflow_id(tenant_slug, record.followup_id, record.reconciliation_id),
        signal=signal.name,
        arg=ending.model_copy(update={"generation": record.generation}),
        event_key=event_key,
    )


def stage_record_press(
    session: AsyncSession,
    tenant_slug: str,
    record: FollowUpRecord,
    press: ButtonPress,
    *,
    event_key: str | None = None,
) -> OutboxEntry:
    """A button press for one record's run (from a provider's reply button), once
    ``session`` commits."""
    return outbox.add_signal(
        session,
        tenant_id=record.tenant_id,
        workflow_id=record_workflow_id(tenant_slug, record.followup_id, record.reconciliation_id),
        signal=PRESS_BUTTON.name,
        arg=press,
        event_key=event_key,
    )


def _stage_poller_start(
    session: AsyncSession, settings: Settings, tenant_slug: str, followup: FollowUp
) -> OutboxEntry:
    return outbox.add_start(
        session,
        tenant_id=followup.tenant_id,
        workflow=FOLLOWUP_POLLER_WORKFLOW,
        workflow_id=followup_workflow_id(tenant_slug, followup.id),
        arg=PollerInput(
            tenant_id=followup.tenant_id,
            tenant=tenant_slug,
            followup_id=followup.id,
            time_scale=settings.time_scale,
        ),
        # A poller still running (reactivated before it stopped) is left be.
        options=start_options(
            settings.task_queue,
            search_attributes(tenant_slug, Kind.FOLLOWUP, followup=followup.id),
            f"Follow-up poller: {followup.name}",
            conflict="use_existing",
        ),
    )


def _stage_poller_signal(
    session: AsyncSession,
    tenant_slug: str,
    followup: FollowUp,
    signal: str,
    arg: BaseModel | None,
) -> OutboxEntry:
    return outbox.add_signal(
        session,
        tenant_id=followup.tenant_id,
        workflow_id=followup_workflow_id(tenant_slug, followup.id),
        signal=signal,
        arg=arg,
    )
