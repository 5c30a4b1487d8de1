"""Closed hours: a contact who writes while closed is told so once per closed period,
a "yes" subscribes them, and the opening tells every subscriber exactly once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from nudge.models.tables import ClosedReply, Notification
from nudge.naming import opening_watch_workflow_id
from tests.conftest import TenantKeys
from tests.utils.receivers import WebhookReceiver
from tests.utils.waiting import eventually, received

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
CLOSED = "We are closed. Shall we tell you when we open? (yes/no)"
OPEN = "We are open again, {{ contact.name }}"


@pytest.fixture
def time_env(own_time_env: WorkflowEnvironment) -> WorkflowEnvironment:
    return own_time_env


def schedule(open_in_days: int = 2, **more: Any) -> dict[str, Any]:
    """Open only on the day ``open_in_days`` from today (UTC), 09:00-17:00: closed now."""
    day = DAYS[(datetime.now(UTC).weekday() + open_in_days) % 7]
    return {
        "timezone": "UTC",
        "week": {day: ["09:00-17:00"]},
        "unavailable_message": {"enabled": True, "message": {"kind": "text", "text": CLOSED}},
        "notify_when_available": {"enabled": True, "message": {"kind": "text", "text": OPEN}},
        **more,
    }


async def setup(api: httpx.AsyncClient, tenant: TenantKeys, hook: WebhookReceiver) -> None:
    admin = tenant.headers()
    for path, body in (
        ("/v1/contacts/ada", {"name": "Ada"}),
        ("/v1/channels/chat", {"type": "webhook", "config": {"url": hook.url}}),
        ("/v1/business-hours/default", schedule()),
    ):
        answer = await api.put(path, json=body, headers=admin)
        assert answer.status_code == 200, answer.text


async def write(api: httpx.AsyncClient, tenant: TenantKeys, text: str, n: int) -> None:
    body = {
        "contact_id": "ada",
        "direction": "incoming",
        "channel": "chat",
        "text": text,
        "message_id": f"m{n}",
    }
    answer = await api.post("/v1/events/messages", json=body, headers=tenant.headers("service"))
    assert answer.status_code == 202, answer.text


async def count(
    sessions: async_sessionmaker[AsyncSession], tenant: TenantKeys, kind: str | None = None
) -> int:
    async with sessions() as session:
        if kind is None:
            query = select(func.count()).select_from(Notification)
            query = query.where(Notification.tenant_id == tenant.id)
        else:
            query = select(func.count()).select_from(ClosedReply)
            query = query.where(ClosedReply.tenant_id == tenant.id, ClosedReply.kind == kind)
        return int(await session.scalar(query) or 0)


async def watch_closed(env: WorkflowEnvironment, tenant: TenantKeys) -> str:
    handle = env.client.get_workflow_handle(opening_watch_workflow_id(tenant.slug, "default"))

    async def closed() -> bool:
        try:
            return (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
        except RPCError:
            return False

    await eventually(closed, message="the opening watch ends")
    result: str = await handle.result()
    return result


@pytest.mark.usefixtures("worker")
async def test_a_contact_writing_while_closed_is_told_once_and_notified_once_at_the_opening(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    sessions: async_sessionmaker[AsyncSession],
    time_env: WorkflowEnvironment,
) -> None:
    await setup(api, tenant, webhook_receiver)

    await write(api, tenant, "hello?", 1)
    (told,) = await received(webhook_receiver, 1)
    assert told.json["message"]["text"] == CLOSED
    await write(api, tenant, "anyone there?", 2)  # the same closed period: not told again
    await write(api, tenant, "Sí", 3)  # yes, in Spanish
    await write(api, tenant, "SIM", 4)  # and again, in Portuguese
    await write(api, tenant, "still closed?", 5)  # writes again while subscribed
    assert await count(sessions, tenant, "unavailable") == 1
    assert await count(sessions, tenant, "subscription") == 1
    assert await count(sessions, tenant) == 1  # one notification: the closed message

    await time_env.sleep(timedelta(days=3))  # past the opening
    assert await watch_closed(time_env, tenant) == "Nobody waits for 'default' to open (1 told)"
    messages = [r.json["message"]["text"] for r in await received(webhook_receiver, 2)]
    assert messages == [CLOSED, "We are open again, Ada"]

    by_schedule = await api.get(
        "/v1/business-hours/default/replies",
        params={"kind": "subscription"},
        headers=tenant.headers(),
    )
    (subscription,) = by_schedule.json()["items"]
    assert (subscription["contact_id"], subscription["channel"]) == ("ada", "chat")
    assert subscription["notified_at"] is not None and subscription["delivery_id"]
    by_contact = await api.get("/v1/contacts/ada/closed-replies", headers=tenant.headers("service"))
    assert sorted(r["kind"] for r in by_contact.json()["items"]) == ["subscription", "unavailable"]


@pytest.mark.usefixtures("worker")
async def test_a_no_or_silence_does_not_subscribe(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await setup(api, tenant, webhook_receiver)
    await write(api, tenant, "hello?", 1)
    await received(webhook_receiver, 1)
    await write(api, tenant, "No", 2)
    await write(api, tenant, "yes, but tomorrow please", 3)  # a sentence is not an answer
    assert await count(sessions, tenant, "subscription") == 0


@pytest.mark.usefixtures("worker")
async def test_an_edit_during_the_closure_moves_the_notification_to_the_new_opening(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await setup(api, tenant, webhook_receiver)
    await write(api, tenant, "hello?", 1)
    await received(webhook_receiver, 1)
    await write(api, tenant, "yes", 2)
    # The opening moves four days later than it was: the watch must wait for the new one.
    moved = await api.put(
        "/v1/business-hours/default", json=schedule(open_in_days=6), headers=tenant.headers()
    )
    assert moved.status_code == 200, moved.text

    await time_env.sleep(timedelta(days=3))  # past the old opening, before the new one
    handle = time_env.client.get_workflow_handle(opening_watch_workflow_id(tenant.slug, "default"))
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    assert len(webhook_receiver.requests) == 1
    await time_env.sleep(timedelta(days=4))
    assert await watch_closed(time_env, tenant) == "Nobody waits for 'default' to open (1 told)"
    assert len(await received(webhook_receiver, 2)) == 2


@pytest.mark.usefixtures("worker")
async def test_the_absence_message_goes_once_a_day_even_while_open(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await setup(api, tenant, webhook_receiver)
    absent = {
        "timezone": "UTC",
        "always_open": True,
        "absence": {
            "enabled": True,
            "message": {"kind": "text", "text": "On holiday until Monday"},
        },
    }
    answer = await api.put("/v1/business-hours/default", json=absent, headers=tenant.headers())
    assert answer.status_code == 200, answer.text
    await write(api, tenant, "hello?", 1)
    await write(api, tenant, "hello again", 2)
    (told,) = await received(webhook_receiver, 1)
    assert told.json["message"]["text"] == "On holiday until Monday"
    assert await count(sessions, tenant, "absence") == 1
    assert await count(sessions, tenant) == 1
