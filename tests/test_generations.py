"""A record's generation is part of everything that can end it: a record that came back is
followed by a run of a new generation (under the same workflow id), which ignores signals
meant for the old one; an old run neither ends nor reminds the new generation's record."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from nudge.activities.followup_record import FollowUpRecordActivities
from nudge.messaging.delivery import Deliverer
from nudge.models.db import transaction
from nudge.models.payloads import (
    AttemptInput,
    ButtonPress,
    Ending,
    EndRecordInput,
    RecordInput,
)
from nudge.models.signals import PRESS_BUTTON, RESOLVE_RECORD, STOP_RECORD
from nudge.models.tables import FollowUpRecord
from nudge.naming import FOLLOWUP_RECORD_WORKFLOW, record_workflow_id
from nudge.security import ActionTokens, SecretBox
from nudge.settings import Settings
from tests.conftest import TenantKeys
from tests.utils.delivery_runs import (
    TICKET,
    add_contact,
    create_followup,
    current_details,
    webhook_channel,
)
from tests.utils.egress import LOOPBACK, loopback_http
from tests.utils.histories import keep_history, scheduled
from tests.utils.receivers import WebhookReceiver
from tests.utils.waiting import received


@pytest.fixture
def itsm() -> Any:
    with WebhookReceiver() as server:
        yield server


async def _second_generation(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    itsm: WebhookReceiver,
    hook: WebhookReceiver,
    sessions: async_sessionmaker[AsyncSession],
    generation: int = 2,
) -> tuple[dict[str, Any], FollowUpRecord]:
    """An inactive follow-up (no poller) and its record INC0012, followed a second time."""
    await add_contact(api, tenant)
    await webhook_channel(api, tenant, hook)
    followup = await create_followup(api, tenant, itsm, channel="ops", status="inactive")
    async with transaction(sessions) as session:
        record = FollowUpRecord(
            tenant_id=tenant.id,
            followup_id=followup["id"],
            reconciliation_id="INC0012",
            state="following",
            version=1,
            generation=generation,
            workflow_started=True,
            data=TICKET,
        )
        session.add(record)
    return followup, record


def _activities(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    box: SecretBox,
    http: httpx.AsyncClient,
) -> FollowUpRecordActivities:
    return FollowUpRecordActivities(
        sessions,
        box,
        http,
        Deliverer(sessions, box, http, LOOPBACK),
        ActionTokens(settings.secret_key_value()),
        public_url=settings.public_url,
    )


async def _start_run(
    client: Any, settings: Settings, tenant: TenantKeys, followup: dict[str, Any], record: Any
) -> Any:
    return await client.start_workflow(
        FOLLOWUP_RECORD_WORKFLOW,
        RecordInput(
            tenant_id=tenant.id,
            tenant=tenant.slug,
            followup_id=followup["id"],
            record_id=record.id,
            reconciliation_id="INC0012",
            version=1,
            generation=record.generation,
        ),
        id=record_workflow_id(tenant.slug, followup["id"], "INC0012"),
        task_queue=settings.task_queue,
    )


@pytest.mark.usefixtures("worker")
async def test_a_stop_the_database_holds_ends_the_run_without_its_signal(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    itsm: WebhookReceiver,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    time_env: WorkflowEnvironment,
) -> None:
    followup, record = await _second_generation(
        api, tenant, itsm, webhook_receiver, sessions, generation=1
    )
    run = await _start_run(time_env.client, settings, tenant, followup, record)
    await received(webhook_receiver, 1)
    async with transaction(sessions) as session:
        stored = await session.get_one(FollowUpRecord, record.id)
        stored.state, stored.ended_by, stored.end_reason = "stopped", "admin API key", "by phone"

    assert await run.result() == "stopped"  # at attempt 2, which sent nothing
    assert len(webhook_receiver.requests) == 1
    assert await scheduled(run, "run_actions") == []  # no escalation for a stopped record
    assert "Ended (stopped) by admin API key: by phone" in await current_details(run)
    await keep_history(run, "followup-record-stored-stop")


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize("resolve_signal", [True, False], ids=["resolved-signal", "no-signal"])
async def test_a_record_back_while_its_old_run_is_open_is_followed_by_that_run_anew(
    resolve_signal: bool,
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    itsm: WebhookReceiver,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    time_env: WorkflowEnvironment,
) -> None:
    followup, record = await _second_generation(
        api, tenant, itsm, webhook_receiver, sessions, generation=1
    )
    run = await _start_run(time_env.client, settings, tenant, followup, record)
    await received(webhook_receiver, 1)
    # A poll resolved it and the next found it again: generation 2, whose start found
    # this run still open (same workflow id), so no other run follows it.
    async with transaction(sessions) as session:
        stored = await session.get_one(FollowUpRecord, record.id)
        stored.generation, stored.attempts_made = 2, 0
    if resolve_signal:  # the resolve of generation 1, arriving only now
        await run.signal(RESOLVE_RECORD.name, Ending(by="poll", reason="no longer returned"))

    assert await run.result() == "completed"  # the run of generation 2, after 3 attempts
    keys = [r.headers["idempotency-key"] for r in webhook_receiver.requests]
    workflow_id = run.id
    assert keys[0].startswith(f"{workflow_id}:1:")
    assert [k.split(":")[-3] for k in keys[1:]] == ["1", "2", "3"]
    assert all(k.startswith(f"{workflow_id}#2:") for k in keys[1:]), keys
    async with sessions() as session:
        stored = await session.get_one(FollowUpRecord, record.id)
    assert (stored.state, stored.generation, stored.ended_by) == ("completed", 2, "schedule")
    if resolve_signal:
        await keep_history(run, "followup-record-came-back")  # the run that went on as gen 2


@pytest.mark.usefixtures("worker")
async def test_a_run_ignores_signals_meant_for_another_generation(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    itsm: WebhookReceiver,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    time_env: WorkflowEnvironment,
) -> None:
    followup, record = await _second_generation(api, tenant, itsm, webhook_receiver, sessions)
    run = await time_env.client.start_workflow(
        FOLLOWUP_RECORD_WORKFLOW,
        RecordInput(
            tenant_id=tenant.id,
            tenant=tenant.slug,
            followup_id=followup["id"],
            record_id=record.id,
            reconciliation_id="INC0012",
            version=1,
            generation=2,
        ),
        id=record_workflow_id(tenant.slug, followup["id"], "INC0012"),
        task_queue=settings.task_queue,
    )
    await received(webhook_receiver, 1)
    # What the first generation's button and stop were meant for, arriving late.
    await run.signal(PRESS_BUTTON.name, ButtonPress(action="approve", by="old card", generation=1))
    await run.signal(STOP_RECORD.name, Ending(by="old", reason="first round", generation=1))
    await run.signal(STOP_RECORD.name, Ending(by="admin", reason="second round", generation=2))

    assert await run.result() == "stopped"
    assert await scheduled(run, "run_actions") == []  # the old press ran no button action
    assert not [r for r in itsm.requests if r.method == "POST"]
    async with sessions() as session:
        stored = await session.get_one(FollowUpRecord, record.id)
    assert (stored.state, stored.ended_by, stored.end_reason) == (
        "stopped",
        "admin",
        "second round",
    )


async def test_an_old_run_neither_ends_nor_reminds_the_new_generation(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    itsm: WebhookReceiver,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    box: SecretBox,
) -> None:
    _, record = await _second_generation(api, tenant, itsm, webhook_receiver, sessions)
    env = ActivityEnvironment()
    async with loopback_http() as http:
        activities = _activities(settings, sessions, box, http)
        old_attempt = AttemptInput(
            tenant_id=tenant.id,
            record_id=record.id,
            attempt=2,
            attempts=3,
            key_prefix="old-run",
            generation=1,
        )
        result = await env.run(activities.run_attempt, old_attempt)
        ended = Ending(by="schedule", reason="all 3 attempts made")
        await env.run(
            activities.end_record,
            EndRecordInput(
                tenant_id=tenant.id,
                record_id=record.id,
                state="completed",
                stop=ended,
                generation=1,
            ),
        )
    assert result.stopped and result.sent == 0
    assert webhook_receiver.requests == []
    async with sessions() as session:
        stored = await session.get_one(FollowUpRecord, record.id)
    assert (stored.state, stored.generation, stored.ended_at) == ("following", 2, None)

    async with loopback_http() as http:
        activities = _activities(settings, sessions, box, http)
        await env.run(
            activities.end_record,
            EndRecordInput(
                tenant_id=tenant.id,
                record_id=record.id,
                state="completed",
                stop=ended,
                generation=2,
            ),
        )
    async with sessions() as session:
        stored = await session.get_one(FollowUpRecord, record.id)
    assert stored.state == "completed"
