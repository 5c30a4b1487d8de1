"""`POST /v1/notifications` with an `Idempotency-Key`: a retry answers the first try's
notification, also when Temporal was down for the first one, and nothing is sent twice."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from nudge.models.tables import Notification
from nudge.settings import Settings
from tests.conftest import TenantKeys, api_client, problems
from tests.utils.receivers import WebhookReceiver, free_port
from tests.utils.waiting import received

BODY = {"contact_id": "ada", "channel": "hook", "message": {"kind": "text", "text": "Hi"}}


async def _setup(api: httpx.AsyncClient, tenant: TenantKeys, hook: WebhookReceiver) -> None:
    admin = tenant.headers()
    await api.put("/v1/contacts/ada", json={"name": "Ada"}, headers=admin)
    channel = {"type": "webhook", "config": {"url": hook.url}}
    await api.put("/v1/channels/hook", json=channel, headers=admin)


async def _post(
    api: httpx.AsyncClient, tenant: TenantKeys, key: str, body: dict[str, Any] = BODY
) -> httpx.Response:
    headers = {**tenant.headers("service"), "Idempotency-Key": key}
    return await api.post("/v1/notifications", json=body, headers=headers)


async def _stored(sessions: async_sessionmaker[AsyncSession], tenant: TenantKeys) -> int:
    async with sessions() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(Notification)
            .where(Notification.tenant_id == tenant.id)
        )
    return int(count or 0)


async def test_a_retry_with_the_same_key_answers_the_same_notification_and_sends_once(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
    sessions: async_sessionmaker[AsyncSession],
    worker: Any,
) -> None:
    await _setup(api, tenant, webhook_receiver)
    first = await _post(api, tenant, "order-1")
    assert first.status_code == 202, first.text
    await time_env.client.get_workflow_handle(first.json()["workflow_id"]).result()
    again = await _post(api, tenant, "order-1")
    assert again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["status"] == "sent"
    assert len(await received(webhook_receiver, 1)) == 1
    assert await _stored(sessions, tenant) == 1

    other = await _post(api, tenant, "order-1", {**BODY, "message": {"kind": "text", "text": "Yo"}})
    assert "already used for another notification" in problems(other)["header.Idempotency-Key"]
    assert await _stored(sessions, tenant) == 1


async def test_a_retry_while_the_start_waits_in_the_outbox_starts_it_once(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    worker: Any,
) -> None:
    await _setup(api, tenant, webhook_receiver)
    # Nothing listens there: every call of this client fails as when Temporal is down.
    down = await Client.connect(
        f"127.0.0.1:{free_port()}", lazy=True, data_converter=pydantic_data_converter
    )
    async with api_client(settings, sessions, down) as unlucky:
        accepted = await _post(unlucky, tenant, "order-2")
    # Accepted all the same: the notification and its run's start are stored together.
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["status"] == "queued"
    assert await _stored(sessions, tenant) == 1

    retried = await _post(api, tenant, "order-2")
    assert retried.status_code == 202, retried.text
    assert retried.json()["id"] == accepted.json()["id"]
    await time_env.client.get_workflow_handle(retried.json()["workflow_id"]).result()
    status = await api.get(f"/v1/notifications/{retried.json()['id']}", headers=tenant.headers())
    assert status.json()["status"] == "sent"
    assert len(await received(webhook_receiver, 1)) == 1
    assert await _stored(sessions, tenant) == 1


async def test_a_bad_key_is_named(api: httpx.AsyncClient, tenant: TenantKeys) -> None:
    answer = await _post(api, tenant, "with space")
    assert "header.Idempotency-Key" in problems(answer)
