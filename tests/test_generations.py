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
from nudge.models.signals import PRESS_BUTTON, STOP_RECORD
from nudge.models.tables import FollowUpRecord
from nudge.naming import FOLLOWUP_RECORD_WORKFLOW, record_workflow_id
from nudge.security import ActionTokens, SecretBox
from nudge.settings import Settings
from tests.conftest import TenantKeys
from tests.utils.delivery_runs import TICKET, add_contact, create_followup, webhook_channel
from tests.utils.egress import LOOPBACK, loopback_http
from tests.utils.histories import scheduled
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
            generation=2,
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
