"""Helpers of the delivery, action and generation tests: tenants with a channel, follow-ups
against a sample ITSM, workers whose deliverer dies where a test says."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError

from nudge.activities.followup_record import FollowUpRecordActivities
from nudge.activities.notification import NotificationActivities
from nudge.messaging.channels.base import ChannelSender, Outbound
from nudge.messaging.delivery import Deliverer
from nudge.models.db import transaction
from nudge.models.tables import Delivery, utcnow
from nudge.security import ActionTokens, SecretBox
from nudge.settings import Settings
from nudge.workers.worker import activities_for, build_worker
from tests.conftest import TenantKeys
from tests.utils.egress import LOOPBACK, loopback_http
from tests.utils.followups import followup_definition
from tests.utils.receivers import SmtpSink, WebhookReceiver
from tests.utils.waiting import eventually

TICKET = {
    "number": "INC0012",
    "short_description": "New laptop",
    "approver": {"email": "ada@example.com"},
}


async def add_contact(api: httpx.AsyncClient, tenant: TenantKeys, external_id: str = "ada") -> None:
    body = {"name": "Ada", "email": "ada@example.com"}
    answer = await api.put(f"/v1/contacts/{external_id}", json=body, headers=tenant.headers())
    assert answer.status_code == 200, answer.text


async def add_channel(
    api: httpx.AsyncClient, tenant: TenantKeys, slug: str, kind: str, config: dict[str, Any]
) -> None:
    answer = await api.put(
        f"/v1/channels/{slug}", json={"type": kind, "config": config}, headers=tenant.headers()
    )
    assert answer.status_code == 200, answer.text


async def webhook_channel(
    api: httpx.AsyncClient, tenant: TenantKeys, hook: WebhookReceiver, slug: str = "ops"
) -> None:
    await add_channel(api, tenant, slug, "webhook", {"url": hook.url, "timeout_seconds": 5})


async def email_channel(
    api: httpx.AsyncClient, tenant: TenantKeys, sink: SmtpSink, slug: str = "mail"
) -> None:
    config = {
        "host": sink.host,
        "port": sink.port,
        "security": "none",
        "from_address": "nudge@example.com",
        "timeout_seconds": 5,
    }
    await add_channel(api, tenant, slug, "email", config)


async def create_followup(
    api: httpx.AsyncClient, tenant: TenantKeys, itsm: WebhookReceiver, **overrides: Any
) -> dict[str, Any]:
    """The approval follow-up against ``itsm``, created active (its poller starts)."""
    await api.put("/v1/secrets/ITSM_TOKEN", json={"value": "itsm-s3cret"}, headers=tenant.headers())
    body = followup_definition(itsm.base_url, **overrides)
    answer = await api.post("/v1/followups", json=body, headers=tenant.headers())
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def record_run(
    client: Client, tenant: TenantKeys, followup: dict[str, Any], rid: str = "INC0012"
) -> WorkflowHandle[Any, Any]:
    return client.get_workflow_handle(f"followup/{tenant.slug}/{followup['id']}/record/{rid}")


async def result_of(handle: WorkflowHandle[Any, Any]) -> Any:
    """The run's result, once the poll that starts it has started it."""

    async def started() -> bool:
        try:
            await handle.describe()
        except RPCError:
            return False
        return True

    await eventually(started, timeout=30, message=f"{handle.id} starts")
    return await handle.result()


async def current_details(handle: WorkflowHandle[Any, Any]) -> str:
    """What the run says it is doing (the Temporal UI shows the same)."""
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return str(metadata.current_details)


async def tenant_deliveries(
    sessions: async_sessionmaker[AsyncSession], tenant: TenantKeys
) -> list[Delivery]:
    async with sessions() as session:
        rows = await session.execute(
            select(Delivery).where(Delivery.tenant_id == tenant.id).order_by(Delivery.created_at)
        )
        return list(rows.scalars())


class DiesAfterTheProviderTookIt(Deliverer):
    """The first send reaches the provider, then its worker dies before recording anything
    (as a kill -9 there would): the delivery stays `sending`. By the time Temporal retries,
    the dead try's lease has lapsed (the test does not wait it out: it ends it)."""

    deaths = 0

    async def _send(
        self, delivery: Delivery, channel: Any, sender: ChannelSender, outbound: Outbound
    ) -> str:
        if DiesAfterTheProviderTookIt.deaths == 0:
            await sender.send(outbound)
            DiesAfterTheProviderTookIt.deaths += 1
            async with transaction(self._sessions) as session:
                await session.execute(
                    update(Delivery).where(Delivery.id == delivery.id).values(leased_until=utcnow())
                )
            raise RuntimeError("worker killed after the provider answered")
        return await super()._send(delivery, channel, sender, outbound)


REPLACED = {
    "load_record_plan",
    "run_attempt",
    "run_actions",
    "end_record",
    "deliver_notification",
    "record_notification_failure",
}


@asynccontextmanager
async def worker_with(
    client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    box: SecretBox,
    deliverer: type[Deliverer],
) -> AsyncIterator[None]:
    """A worker on the test's task queue whose notifications and record attempts send
    through ``deliverer``; every other activity (resends too) is the real one."""
    deliverer.deaths = 0  # type: ignore[attr-defined]
    async with loopback_http() as http:
        sending = deliverer(sessions, box, http, LOOPBACK)
        notifications = NotificationActivities(sessions, sending)
        records = FollowUpRecordActivities(
            sessions,
            box,
            http,
            sending,
            ActionTokens(settings.secret_key_value()),
            public_url=settings.public_url,
        )
        activities = [
            a for a in activities_for(settings, sessions, box, http) if a.__name__ not in REPLACED
        ]
        activities += [
            notifications.deliver_notification,
            notifications.record_notification_failure,
            records.load_record_plan,
            records.run_attempt,
            records.run_actions,
            records.end_record,
        ]
        async with build_worker(client, settings.task_queue, activities):
            yield
