"""Sends are effectively once, and honest when they cannot be: a lease per idempotency key,
conditional status changes, `unknown` where a provider cannot drop a copy, and an
operator's resend. Providers are real servers on 127.0.0.1; runs are on the test server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.enums.v1 import EventType
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from nudge.integrations import calls
from nudge.messaging.channels.base import Outbound, Recipient
from nudge.messaging.delivery import Deliverer, Sent
from nudge.models.db import transaction
from nudge.models.messages import TextMessage
from nudge.models.tables import Channel, Contact, FollowUpRecipient, FollowUpRecord
from nudge.security import SecretBox
from nudge.settings import Settings
from nudge.store import deliveries
from nudge.store.directory import find_channel, find_contact
from tests.conftest import TenantKeys
from tests.utils.delivery_runs import (
    TICKET,
    DiesAfterTheProviderTookIt,
    add_channel,
    add_contact,
    create_followup,
    current_details,
    email_channel,
    record_run,
    result_of,
    tenant_deliveries,
    webhook_channel,
    worker_with,
)
from tests.utils.egress import LOOPBACK, loopback_http
from tests.utils.histories import keep_history
from tests.utils.receivers import Reply, SmtpSink, WebhookReceiver, free_port
from tests.utils.waiting import eventually, received


@pytest.fixture
def time_env(own_time_env: WorkflowEnvironment) -> WorkflowEnvironment:
    """Follow-up pollers run forever: each test has a server of its own."""
    return own_time_env


@pytest.fixture
async def dying_worker(
    time_env: WorkflowEnvironment,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    box: SecretBox,
) -> AsyncIterator[None]:
    async with worker_with(time_env.client, settings, sessions, box, DiesAfterTheProviderTookIt):
        yield


@pytest.fixture
def itsm() -> Any:
    with WebhookReceiver() as server:
        server.serve_json("/api/tickets", {"result": [TICKET]})
        yield server


async def _contact_and_channel(
    sessions: async_sessionmaker[AsyncSession], tenant: TenantKeys, slug: str
) -> tuple[Contact, Channel]:
    async with sessions() as session:
        contact = await find_contact(session, tenant.id, "ada")
        channel = await find_channel(session, tenant.id, slug)
    assert contact is not None and channel is not None
    return contact, channel


def _outbound(tenant: TenantKeys, channel: str, key: str) -> Outbound:
    return Outbound(
        tenant=tenant.slug,
        channel=channel,
        idempotency_key=key,
        recipient=Recipient(external_id="ada", name="Ada", email="ada@example.com"),
        message=TextMessage(kind="text", text="Hello Ada"),
    )


async def _notify(api: httpx.AsyncClient, tenant: TenantKeys, channel: str) -> dict[str, Any]:
    answer = await api.post(
        "/v1/notifications",
        json={"contact_id": "ada", "channel": channel, "message": {"kind": "text", "text": "Hi"}},
        headers=tenant.headers("service"),
    )
    assert answer.status_code == 202, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_two_tries_at_once_make_one_provider_call(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    sessions: async_sessionmaker[AsyncSession],
    box: SecretBox,
) -> None:
    await add_contact(api, tenant)
    await webhook_channel(api, tenant, webhook_receiver)
    webhook_receiver.respond_with(Reply(delay_seconds=1))  # the first try is still in flight
    contact, channel = await _contact_and_channel(sessions, tenant, "ops")
    outbound = _outbound(tenant, "ops", f"{tenant.slug}:lease")
    async with loopback_http() as http:
        deliverer = Deliverer(sessions, box, http, LOOPBACK)

        async def one_try() -> Sent:
            return await deliverer.deliver(
                tenant_id=tenant.id, contact=contact, channel=channel, outbound=outbound
            )

        first = asyncio.ensure_future(one_try())
        await received(webhook_receiver, 1)
        with pytest.raises(ApplicationError) as refused:
            await one_try()
        assert (await first).status == "sent"
    assert refused.value.type == "DeliveryInFlight"
    assert not refused.value.non_retryable
    assert len(webhook_receiver.requests) == 1
    [delivery] = await tenant_deliveries(sessions, tenant)
    assert (delivery.status, delivery.tries, delivery.leased_until) == ("sent", 1, None)


async def test_a_try_renews_its_lease_while_a_slow_provider_answers(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    sessions: async_sessionmaker[AsyncSession],
    box: SecretBox,
) -> None:
    await add_contact(api, tenant)
    await webhook_channel(api, tenant, webhook_receiver)
    webhook_receiver.respond_with(Reply(delay_seconds=2))  # far beyond the lease
    contact, channel = await _contact_and_channel(sessions, tenant, "ops")
    outbound = _outbound(tenant, "ops", f"{tenant.slug}:renewed")
    async with loopback_http() as http:
        lease = timedelta(milliseconds=300)
        deliverer = Deliverer(
            sessions, box, http, LOOPBACK, lease=lease, lease_renewal=timedelta(milliseconds=50)
        )

        async def one_try() -> Sent:
            return await deliverer.deliver(
                tenant_id=tenant.id, contact=contact, channel=channel, outbound=outbound
            )

        first = asyncio.ensure_future(one_try())
        await received(webhook_receiver, 1)
        [claimed] = await tenant_deliveries(sessions, tenant)
        assert claimed.leased_until is not None
        first_lease_end = claimed.leased_until

        async def renewed_past_the_first_lease() -> bool:
            [now] = await tenant_deliveries(sessions, tenant)
            return bool(now.leased_until and now.leased_until > first_lease_end + lease)

        await eventually(renewed_past_the_first_lease, message="the try renews its lease")
        with pytest.raises(ApplicationError) as refused:
            await one_try()
        assert (await first).status == "sent"
    assert refused.value.type == "DeliveryInFlight"
    assert len(webhook_receiver.requests) == 1


async def test_a_late_failure_never_overwrites_sent(
    api: httpx.AsyncClient, tenant: TenantKeys, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await add_contact(api, tenant)
    contact, _ = await _contact_and_channel_or_none(sessions, tenant)
    async with transaction(sessions) as session:
        delivery = await deliveries.add_delivery(
            session,
            tenant_id=tenant.id,
            idempotency_key=f"{tenant.slug}:late",
            contact_id=contact.id,
            channel="ops",
            lease=timedelta(minutes=1),
        )
    async with transaction(sessions) as session:
        assert await deliveries.mark_sent(session, delivery.id, {"status_code": 200})
    async with transaction(sessions) as session:
        # The try that timed out answers last.
        changed = await deliveries.mark_not_sent(
            session, delivery.id, error="timed out", response={}, final=True
        )
        assert not await deliveries.mark_unknown(session, delivery.id, "late")
    assert not changed
    [stored] = await tenant_deliveries(sessions, tenant)
    assert (stored.status, stored.error, stored.provider_response) == (
        "sent",
        None,
        {"status_code": 200},
    )


async def _contact_and_channel_or_none(
    sessions: async_sessionmaker[AsyncSession], tenant: TenantKeys
) -> tuple[Contact, None]:
    async with sessions() as session:
        contact = await find_contact(session, tenant.id, "ada")
    assert contact is not None
    return contact, None


@pytest.mark.usefixtures("dying_worker")
async def test_a_webhook_send_whose_try_died_is_sent_again_with_the_same_key(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_contact(api, tenant)
    await webhook_channel(api, tenant, webhook_receiver)
    queued = await _notify(api, tenant, "ops")
    await time_env.client.get_workflow_handle(queued["workflow_id"]).result()

    assert DiesAfterTheProviderTookIt.deaths == 1
    keys = [r.headers["idempotency-key"] for r in webhook_receiver.requests]
    assert len(keys) == 2 and len(set(keys)) == 1  # the receiver drops the copy
    [delivery] = await tenant_deliveries(sessions, tenant)
    assert (delivery.status, delivery.tries) == ("sent", 2)


@pytest.mark.usefixtures("dying_worker")
async def test_an_email_whose_try_died_is_unknown_not_resent_until_an_operator_says_so(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    make_tenant: Any,
    smtp_sink: SmtpSink,
    time_env: WorkflowEnvironment,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_contact(api, tenant)
    await email_channel(api, tenant, smtp_sink)
    queued = await _notify(api, tenant, "mail")
    outcome = await time_env.client.get_workflow_handle(queued["workflow_id"]).result()

    assert DiesAfterTheProviderTookIt.deaths == 1
    assert outcome["status"] == "unknown"
    assert len(smtp_sink.messages) == 1  # SMTP would deliver a copy: none was sent
    [delivery] = await tenant_deliveries(sessions, tenant)
    assert (delivery.status, delivery.tries) == ("unknown", 2)
    notification = (
        await api.get(f"/v1/notifications/{queued['id']}", headers=tenant.headers("service"))
    ).json()
    assert notification["status"] == "unknown"
    assert "outcome unknown" in notification["error"]

    admin = tenant.headers()
    listed = (await api.get("/v1/deliveries?status=unknown", headers=admin)).json()
    assert [(d["id"], d["status"], d["contact_id"], d["channel"]) for d in listed["items"]] == [
        (delivery.id, "unknown", "ada", "mail")
    ]
    assert (await api.get("/v1/deliveries?status=sent", headers=admin)).json()["items"] == []
    other = await make_tenant()
    assert (await api.get("/v1/deliveries", headers=other.headers())).json()["items"] == []
    resend_path = f"/v1/deliveries/{delivery.id}/resend"
    assert (await api.post(resend_path, headers=other.headers())).status_code == 404
    assert (await api.post(resend_path, headers=tenant.headers("service"))).status_code == 403

    accepted = await api.post(resend_path, headers=admin)
    assert accepted.status_code == 202, accepted.text
    workflow_id = accepted.json()["workflow_id"]
    assert workflow_id == f"delivery-resend/{tenant.slug}/{delivery.id}"
    result = await time_env.client.get_workflow_handle(workflow_id).result()
    assert result["status"] == "sent"
    resend_id = result["delivery_id"]
    assert len(smtp_sink.messages) == 2
    resent = smtp_sink.messages[1].message
    assert resent["X-Nudge-Idempotency-Key"].strip() == delivery.idempotency_key + "#resend"
    assert resent["Message-ID"] != smtp_sink.messages[0].message["Message-ID"]

    # Asking again finds the same run: nothing more is sent.
    again = await api.post(resend_path, headers=admin)
    assert again.json()["workflow_id"] == workflow_id
    await time_env.client.get_workflow_handle(workflow_id).result()
    assert len(smtp_sink.messages) == 2
    listed = (await api.get("/v1/deliveries?status=unknown", headers=admin)).json()["items"]
    assert listed[0]["resend"] == {"id": resend_id, "status": "sent"}
    # Only an unknown delivery is resent.
    sent_one = await api.post(f"/v1/deliveries/{resend_id}/resend", headers=admin)
    assert sent_one.status_code == 409
    page = (await api.get("/v1/deliveries?limit=1", headers=admin)).json()
    assert len(page["items"]) == 1 and page["next_cursor"]
    rest = await api.get(f"/v1/deliveries?limit=1&cursor={page['next_cursor']}", headers=admin)
    assert [d["id"] for d in page["items"] + rest.json()["items"]] == [
        resend_id,
        delivery.id,
    ]


@pytest.mark.usefixtures("dying_worker")
async def test_an_unknown_reminder_is_not_resent_and_the_run_says_so(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    smtp_sink: SmtpSink,
    itsm: WebhookReceiver,
    time_env: WorkflowEnvironment,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_contact(api, tenant)
    await email_channel(api, tenant, smtp_sink)
    followup = await create_followup(
        api, tenant, itsm, channel="mail", schedule={"notify_minutes": 60, "attempts": 1}
    )
    run = record_run(time_env.client, tenant, followup)
    assert await result_of(run) == "completed"

    assert len(smtp_sink.messages) == 1
    [delivery] = await tenant_deliveries(sessions, tenant)
    assert delivery.status == "unknown"
    details = await current_details(run)
    assert details.endswith("1 send unknown (not resent)"), details
    await keep_history(run, "followup-record-send-unknown")
    async with sessions() as session:
        record = (
            await session.execute(
                select(FollowUpRecord).where(FollowUpRecord.followup_id == followup["id"])
            )
        ).scalar_one()
    assert record.problems["unknown_sends"] == ["ada"]
    # The attempt heartbeats: a killed worker is noticed in 30 s, and crashes have room.
    history = await run.fetch_history()
    [scheduled] = [
        e.activity_task_scheduled_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "run_attempt"
    ]
    assert scheduled.heartbeat_timeout.ToTimedelta() == timedelta(seconds=30)
    assert scheduled.retry_policy.maximum_attempts == 20


@pytest.mark.usefixtures("worker")
async def test_the_recipient_is_recorded_before_the_provider_is_called(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    itsm: WebhookReceiver,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_contact(api, tenant)
    await webhook_channel(api, tenant, webhook_receiver)
    webhook_receiver.respond_with(Reply(delay_seconds=2))
    followup = await create_followup(api, tenant, itsm, channel="ops")
    await received(webhook_receiver, 1)

    # The provider has the message and has not answered yet: a reply now finds whom it ends.
    async with sessions() as session:
        recipients = (
            await session.execute(
                select(FollowUpRecipient.contact_id)
                .join(FollowUpRecord, FollowUpRecord.id == FollowUpRecipient.record_id)
                .where(FollowUpRecord.followup_id == followup["id"])
            )
        ).all()
        contact = await find_contact(session, tenant.id, "ada")
    assert contact is not None
    assert [row[0] for row in recipients] == [contact.id]


async def test_a_send_heartbeats_while_the_provider_takes_its_time(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    sessions: async_sessionmaker[AsyncSession],
    box: SecretBox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await add_contact(api, tenant)
    await webhook_channel(api, tenant, webhook_receiver)
    webhook_receiver.respond_with(Reply(delay_seconds=0.5))
    monkeypatch.setattr(calls, "HEARTBEAT_EVERY", 0.05)
    contact, channel = await _contact_and_channel(sessions, tenant, "ops")
    beats: list[Any] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details)
    async with loopback_http() as http:
        deliverer = Deliverer(sessions, box, http, LOOPBACK)
        sent = await env.run(
            deliverer.deliver,
            tenant_id=tenant.id,
            contact=contact,
            channel=channel,
            outbound=_outbound(tenant, "ops", f"{tenant.slug}:slow"),
        )
    assert sent.status == "sent"
    assert len(beats) >= 3


class _SlowToAnswerData:
    """An SMTP server that takes the message and answers its DATA too late."""

    def __init__(self) -> None:
        self.received = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received += 1
        await asyncio.sleep(1.5)
        return "250 OK"


async def _lost_answer_then_retry(
    sessions: async_sessionmaker[AsyncSession],
    box: SecretBox,
    tenant: TenantKeys,
    slug: str,
) -> tuple[Sent, Sent]:
    contact, channel = await _contact_and_channel(sessions, tenant, slug)
    outbound = _outbound(tenant, slug, f"{tenant.slug}:lost:{slug}")
    async with loopback_http() as http:
        deliverer = Deliverer(sessions, box, http, LOOPBACK)
        tries = [
            await deliverer.deliver(
                tenant_id=tenant.id, contact=contact, channel=channel, outbound=outbound
            )
            for _ in range(2)
        ]
    return tries[0], tries[1]


async def test_a_slack_answer_lost_after_the_message_left_is_unknown_and_not_resent(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    sessions: async_sessionmaker[AsyncSession],
    box: SecretBox,
) -> None:
    await add_contact(api, tenant)
    config = {"webhook_url": webhook_receiver.url, "timeout_seconds": 0.3}
    await add_channel(api, tenant, "team", "slack", config)
    webhook_receiver.respond_with(Reply(delay_seconds=1))
    first, retry = await _lost_answer_then_retry(sessions, box, tenant, "team")

    assert (first.status, retry.status) == ("unknown", "unknown")
    assert len(webhook_receiver.requests) == 1  # Slack would post a copy: none was sent
    [delivery] = await tenant_deliveries(sessions, tenant)
    assert delivery.status == "unknown" and "answer was lost" in (delivery.error or "")


async def test_an_smtp_answer_lost_after_the_data_is_unknown_and_not_resent(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    sessions: async_sessionmaker[AsyncSession],
    box: SecretBox,
) -> None:
    handler = _SlowToAnswerData()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        await add_contact(api, tenant)
        config = {
            "host": "127.0.0.1",
            "port": controller.port,
            "security": "none",
            "from_address": "nudge@example.com",
            "timeout_seconds": 0.5,
        }
        await add_channel(api, tenant, "mail", "email", config)
        first, retry = await _lost_answer_then_retry(sessions, box, tenant, "mail")
    finally:
        controller.stop()
    assert (first.status, retry.status) == ("unknown", "unknown")
    assert handler.received == 1
    [delivery] = await tenant_deliveries(sessions, tenant)
    assert delivery.status == "unknown"


async def test_a_delivery_that_kept_no_message_is_not_resent(
    api: httpx.AsyncClient, tenant: TenantKeys, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await add_contact(api, tenant)
    contact, _ = await _contact_and_channel_or_none(sessions, tenant)
    async with transaction(sessions) as session:
        # Claimed before deliveries kept their message (migration 0008).
        delivery = await deliveries.add_delivery(
            session,
            tenant_id=tenant.id,
            idempotency_key=f"{tenant.slug}:old",
            contact_id=contact.id,
            channel="mail",
            lease=timedelta(0),
        )
    async with transaction(sessions) as session:
        assert await deliveries.mark_unknown(session, delivery.id, "answer lost")
    answer = await api.post(f"/v1/deliveries/{delivery.id}/resend", headers=tenant.headers())
    assert answer.status_code == 409, answer.text
    assert (
        await api.post("/v1/deliveries/nope/resend", headers=tenant.headers())
    ).status_code == 404
