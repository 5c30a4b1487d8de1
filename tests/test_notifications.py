"""Individual notifications end to end: API → workflow → delivery activity → real providers."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from nudge.activities.notification import NotificationActivities
from nudge.messaging.channels.base import Outbound
from nudge.messaging.delivery import AfterSent, Deliverer
from nudge.models.tables import Contact, Delivery
from nudge.naming import CONTACT, KIND, TENANT
from nudge.security import SecretBox
from nudge.settings import Settings
from nudge.workers.worker import build_worker
from tests.conftest import TenantKeys, problems
from tests.utils.egress import LOOPBACK, loopback_http
from tests.utils.histories import keep_history
from tests.utils.receivers import SmtpSink, WebhookReceiver

pytestmark = pytest.mark.usefixtures("worker")


async def _contact(api: httpx.AsyncClient, tenant: TenantKeys, external_id: str = "ada") -> None:
    body = {"name": "Ada", "email": "ada@example.com"}
    assert (
        await api.put(f"/v1/contacts/{external_id}", json=body, headers=tenant.headers())
    ).status_code == 200


async def _webhook(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    receiver: WebhookReceiver,
    secret: str | None = "s3cret",
) -> None:
    config: dict[str, Any] = {"url": receiver.url}
    if secret:
        config["secret"] = secret
    response = await api.put(
        "/v1/channels/ops-webhook",
        json={"type": "webhook", "config": config},
        headers=tenant.headers(),
    )
    assert response.status_code == 200, response.text


async def _notify(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    text: str = "Hello {{ contact.name }}",
    channel: str = "ops-webhook",
) -> dict[str, Any]:
    response = await api.post(
        "/v1/notifications",
        json={"contact_id": "ada", "channel": channel, "message": {"kind": "text", "text": text}},
        headers=tenant.headers("service"),
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "queued"
    return body


async def _finish(env: WorkflowEnvironment, workflow_id: str) -> None:
    await env.client.get_workflow_handle(workflow_id).result()


async def test_notification_reaches_the_webhook_signed_and_lands_in_history(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await _contact(api, tenant)
    await _webhook(api, tenant, webhook_receiver)
    queued = await _notify(api, tenant)
    await _finish(time_env, queued["workflow_id"])

    [request] = webhook_receiver.requests
    assert request.headers["content-type"] == "application/json"
    stamp, digest = (p.split("=", 1)[1] for p in request.headers["x-nudge-signature"].split(","))
    signed = f"{stamp}.".encode() + request.body
    assert digest == hmac.new(b"s3cret", signed, hashlib.sha256).hexdigest()
    key = request.headers["idempotency-key"]
    assert key == f"{queued['workflow_id']}:1:ada:ops-webhook"
    assert request.json["tenant"] == tenant.slug
    assert request.json["idempotency_key"] == key
    assert request.json["channel"] == "ops-webhook"
    assert request.json["recipient"]["external_id"] == "ada"
    assert request.json["message"] == {"kind": "text", "text": "Hello Ada"}

    status = await api.get(f"/v1/notifications/{queued['id']}", headers=tenant.headers("service"))
    assert status.json()["status"] == "sent"
    history = await api.get("/v1/contacts/ada/messages", headers=tenant.headers())
    [message] = history.json()["items"]
    assert (message["direction"], message["text"], message["channel"]) == (
        "outgoing",
        "Hello Ada",
        "ops-webhook",
    )


async def test_notification_reaches_the_smtp_server_as_text_and_html(
    api: httpx.AsyncClient, tenant: TenantKeys, smtp_sink: SmtpSink, time_env: WorkflowEnvironment
) -> None:
    await _contact(api, tenant)
    config = {
        "host": "127.0.0.1",
        "port": smtp_sink.port,
        "security": "none",
        "from_address": "nudge@example.com",
    }
    await api.put(
        "/v1/channels/mail", json={"type": "email", "config": config}, headers=tenant.headers()
    )
    card = {
        "kind": "card",
        "card": {"title": "Approval needed for {{ contact.name }}", "text": "INC0012 <urgent>"},
    }
    response = await api.post(
        "/v1/notifications",
        json={"contact_id": "ada", "channel": "mail", "message": card},
        headers=tenant.headers("service"),
    )
    await _finish(time_env, response.json()["workflow_id"])

    [mail] = smtp_sink.messages
    assert mail.rcpt_tos == ["ada@example.com"]
    assert mail.message["Subject"] == "Approval needed for Ada"
    text = mail.message.get_body(preferencelist=("plain",))
    html = mail.message.get_body(preferencelist=("html",))
    assert text is not None and "INC0012 <urgent>" in text.get_content()
    assert html is not None and "INC0012 &lt;urgent&gt;" in html.get_content()


async def test_provider_4xx_fails_at_once_with_the_providers_answer(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await _contact(api, tenant)
    await _webhook(api, tenant, webhook_receiver)
    webhook_receiver.respond_with(422)
    queued = await _notify(api, tenant)
    with pytest.raises(WorkflowFailureError):
        await _finish(time_env, queued["workflow_id"])
    await keep_history(
        time_env.client.get_workflow_handle(queued["workflow_id"]), "notification-failed"
    )

    assert len(webhook_receiver.requests) == 1
    status = (
        await api.get(f"/v1/notifications/{queued['id']}", headers=tenant.headers("service"))
    ).json()
    assert status["status"] == "failed"
    assert "422" in status["error"]
    history = await api.get("/v1/contacts/ada/messages", headers=tenant.headers())
    assert history.json()["items"] == []


async def test_provider_5xx_is_retried_with_the_same_idempotency_key(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await _contact(api, tenant)
    await _webhook(api, tenant, webhook_receiver)
    webhook_receiver.respond_with(503, 502, 200)
    queued = await _notify(api, tenant)
    await _finish(time_env, queued["workflow_id"])

    keys = [r.headers["idempotency-key"] for r in webhook_receiver.requests]
    assert len(keys) == 3 and len(set(keys)) == 1
    status = await api.get(f"/v1/notifications/{queued['id']}", headers=tenant.headers("service"))
    assert status.json()["status"] == "sent"


class CrashAfterProviderAccepted(Deliverer):
    """Dies once after the provider took the message, before anything else is recorded."""

    crashed = False

    async def _record(
        self, delivery_id: str, contact: Contact, outbound: Outbound, after_sent: AfterSent | None
    ) -> None:
        if not CrashAfterProviderAccepted.crashed:
            CrashAfterProviderAccepted.crashed = True
            raise RuntimeError("worker lost its database connection")
        await super()._record(delivery_id, contact, outbound, after_sent)


@pytest.fixture
async def crashing_worker(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    box: SecretBox,
    time_env: WorkflowEnvironment,
) -> AsyncIterator[None]:
    async with loopback_http() as http:
        activities = NotificationActivities(
            sessions, CrashAfterProviderAccepted(sessions, box, http, LOOPBACK)
        )
        worker = build_worker(
            time_env.client,
            settings.task_queue + "-crash",
            [activities.deliver_notification, activities.record_notification_failure],
        )
        async with worker:
            yield


async def test_delivery_retried_after_the_provider_accepted_does_not_send_again(
    settings: Settings,
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
    crashing_worker: None,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    settings.task_queue += "-crash"
    await _contact(api, tenant)
    await _webhook(api, tenant, webhook_receiver)
    queued = await _notify(api, tenant)
    await _finish(time_env, queued["workflow_id"])

    assert CrashAfterProviderAccepted.crashed
    assert len(webhook_receiver.requests) == 1
    history = await api.get("/v1/contacts/ada/messages", headers=tenant.headers())
    assert len(history.json()["items"]) == 1
    async with sessions() as session:
        delivery = (
            await session.execute(
                Delivery.__table__.select().where(Delivery.tenant_id == tenant.id)
            )
        ).one()
    assert (delivery.status, delivery.tries) == ("sent", 1)


async def test_last_used_sends_on_the_channel_the_contact_last_wrote_from(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await _contact(api, tenant)
    await _webhook(api, tenant, webhook_receiver)
    refused = await api.post(
        "/v1/notifications",
        json={
            "contact_id": "ada",
            "channel": "last_used",
            "message": {"kind": "text", "text": "hi"},
        },
        headers=tenant.headers("service"),
    )
    assert "body.channel" in problems(refused)

    async with sessions() as session, session.begin():
        await session.execute(
            update(Contact).where(Contact.tenant_id == tenant.id).values(last_channel="ops-webhook")
        )
    queued = await _notify(api, tenant, channel="last_used")
    assert queued["delivered_on"] == "ops-webhook"
    await _finish(time_env, queued["workflow_id"])
    assert len(webhook_receiver.requests) == 1


async def test_bad_notifications_are_refused_naming_the_field(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    await _contact(api, tenant)
    send = {"contact_id": "ghost", "channel": "nowhere", "message": {"kind": "text", "text": "hi"}}
    assert problems(
        await api.post("/v1/notifications", json=send, headers=tenant.headers("service"))
    ) == {"body.contact_id": "no contact with external id 'ghost'"}
    send["contact_id"] = "ada"
    assert "body.channel" in problems(
        await api.post("/v1/notifications", json=send, headers=tenant.headers("service"))
    )
    send["message"] = {"kind": "text", "text": "Hello {{ contact.name "}
    assert "body.message.text" in problems(
        await api.post("/v1/notifications", json=send, headers=tenant.headers("service"))
    )
    send["message"] = {"kind": "fax", "text": "hi"}
    assert (
        await api.post("/v1/notifications", json=send, headers=tenant.headers("service"))
    ).status_code == 422


async def test_agents_cannot_send_and_other_tenants_cannot_read(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    make_tenant: Any,
    webhook_receiver: WebhookReceiver,
) -> None:
    await _contact(api, tenant)
    await _webhook(api, tenant, webhook_receiver)
    send = {
        "contact_id": "ada",
        "channel": "ops-webhook",
        "message": {"kind": "text", "text": "hi"},
    }
    assert (
        await api.post("/v1/notifications", json=send, headers=tenant.headers("agent"))
    ).status_code == 403
    queued = await _notify(api, tenant)
    other: TenantKeys = await make_tenant()
    assert (
        await api.get(f"/v1/notifications/{queued['id']}", headers=other.headers())
    ).status_code == 404


async def test_operators_find_the_run_by_tenant_kind_and_contact(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await _contact(api, tenant)
    await _webhook(api, tenant, webhook_receiver)
    queued = await _notify(api, tenant)
    assert queued["workflow_id"] == f"notification/{tenant.slug}/{queued['id']}"
    handle = time_env.client.get_workflow_handle(queued["workflow_id"])
    await handle.result()
    await keep_history(handle, "notification-sent")
    description = await handle.describe()
    attributes = description.typed_search_attributes
    assert attributes.get(TENANT) == tenant.slug
    assert attributes.get(KIND) == "notification"
    assert attributes.get(CONTACT) == "ada"
    assert await description.static_summary() == "Notification to ada on ops-webhook"
    assert "s3cret" not in str(await handle.fetch_history())
