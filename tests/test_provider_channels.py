"""WhatsApp and SMS end to end: sends reach the providers' fakes, their signed receipts move
deliveries to `delivered` and `read`, and contacts' messages answer journeys.

The API is served over real HTTP (the fakes post to its webhook URLs), the worker runs the
real activities, and every provider call goes to a fake that checks it as the provider does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from nudge.dev.fake_twilio import FakeTwilio
from nudge.dev.fake_whatsapp import FakeWhatsApp
from nudge.models.tables import DeliveryReceipt, Message
from nudge.naming import delivery_fallback_workflow_id
from nudge.settings import Settings
from tests.conftest import TenantKeys, problems
from tests.utils.followups import followup_definition
from tests.utils.histories import keep_history
from tests.utils.journeys import create, enroll
from tests.utils.outage import relay_all
from tests.utils.receivers import WebhookReceiver, free_port
from tests.utils.served import served_api
from tests.utils.waiting import eventually

PHONE = "+34600111222"
WA_ID = PHONE.removeprefix("+")
TICKET = {
    "number": "INC0012",
    "short_description": "New laptop",
    "approver": {"email": "ada@example.com"},
}


@pytest.fixture
def time_env(own_time_env: WorkflowEnvironment) -> WorkflowEnvironment:
    """A server per test: a follow-up's poller never ends, and time is skipped here."""
    return own_time_env


@pytest.fixture
def api_port() -> int:
    return free_port()


@pytest.fixture
def settings(settings: Settings, api_port: int) -> Settings:
    """The test's settings, with the served API as the public URL the providers call."""
    return settings.model_copy(update={"public_url": f"http://127.0.0.1:{api_port}"})


@pytest.fixture
async def served(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    time_env: WorkflowEnvironment,
    api_port: int,
) -> AsyncIterator[str]:
    async with served_api(settings, sessions, time_env.client, api_port) as url:
        yield url


@pytest.fixture
def whatsapp() -> Iterator[FakeWhatsApp]:
    with FakeWhatsApp() as fake:
        fake.auto_receipts = ("sent", "delivered", "read")
        yield fake


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        fake.auto_receipts = ("sent", "delivered", "read")
        yield fake


async def _put_channel(
    api: httpx.AsyncClient, tenant: TenantKeys, slug: str, body: dict[str, Any]
) -> dict[str, Any]:
    answer = await api.put(f"/v1/channels/{slug}", json=body, headers=tenant.headers())
    assert answer.status_code == 200, answer.text
    channel: dict[str, Any] = answer.json()
    return channel


async def whatsapp_channel(
    api: httpx.AsyncClient, tenant: TenantKeys, fake: FakeWhatsApp, slug: str = "wa", **more: Any
) -> dict[str, Any]:
    config = {
        "phone_number_id": fake.phone_number_id,
        "access_token": fake.access_token,
        "app_secret": fake.app_secret,
        "verify_token": "verify-me",
        "base_url": fake.base_url,
    }
    channel = await _put_channel(api, tenant, slug, {"type": "whatsapp", "config": config, **more})
    fake.webhook_url = channel["webhook_url"]
    return channel


async def sms_channel(
    api: httpx.AsyncClient, tenant: TenantKeys, fake: FakeTwilio, slug: str = "sms", **more: Any
) -> dict[str, Any]:
    config = {
        "account_sid": fake.account_sid,
        "auth_token": fake.auth_token,
        "from": fake.numbers[0],
        "base_url": fake.base_url,
    }
    channel = await _put_channel(api, tenant, slug, {"type": "sms", "config": config, **more})
    fake.inbound_url = channel["webhook_url"]
    return channel


async def add_ada(
    api: httpx.AsyncClient, tenant: TenantKeys, phone: str = "+34 600 11 12 22"
) -> None:
    body = {"name": "Ada", "email": "ada@example.com", "phone": phone}
    answer = await api.put("/v1/contacts/ada", json=body, headers=tenant.headers())
    assert answer.status_code == 200, answer.text
    assert answer.json()["phone"] == PHONE


async def ada_writes(whatsapp: FakeWhatsApp, text: str = "Hola") -> str:
    """Ada writes to the WhatsApp number (which opens the 24-hour window); the wamid."""
    answer, wamid = await asyncio.to_thread(whatsapp.send_text, WA_ID, text)
    assert answer.status_code == 200, answer.text
    return wamid


async def notify(
    api: httpx.AsyncClient, tenant: TenantKeys, channel: str, message: dict[str, Any]
) -> str:
    body = {"contact_id": "ada", "channel": channel, "message": message}
    answer = await api.post("/v1/notifications", json=body, headers=tenant.headers("service"))
    assert answer.status_code == 202, answer.text
    notification_id: str = answer.json()["id"]
    return notification_id


async def delivery_of(
    api: httpx.AsyncClient, tenant: TenantKeys, notification_id: str, status: str
) -> dict[str, Any]:
    """The notification's delivery, once it is ``status``."""

    async def check() -> dict[str, Any] | None:
        answer = await api.get(
            f"/v1/notifications/{notification_id}", headers=tenant.headers("service")
        )
        delivery: dict[str, Any] | None = answer.json()["delivery"]
        return delivery if delivery is not None and delivery["status"] == status else None

    found: dict[str, Any] = await eventually(check, message=f"the delivery is {status}")
    return found


def _read_in_order(delivery: dict[str, Any]) -> None:
    assert delivery["sent_at"] <= delivery["delivered_at"] <= delivery["read_at"]
    assert [r["status"] for r in delivery["receipts"]] == ["sent", "delivered", "read"]


# --- notifications ------------------------------------------------------------------------------


@pytest.mark.usefixtures("worker", "served")
async def test_a_whatsapp_notification_is_delivered_and_read_through_signed_receipts(
    api: httpx.AsyncClient, tenant: TenantKeys, whatsapp: FakeWhatsApp
) -> None:
    await whatsapp_channel(api, tenant, whatsapp)
    await add_ada(api, tenant)
    await ada_writes(whatsapp)

    notification = await notify(
        api, tenant, "wa", {"kind": "text", "text": "Hi {{ contact.name }}"}
    )

    (sent,) = await asyncio.to_thread(whatsapp.wait_for, 1)
    assert sent.to == WA_ID and sent.body["text"]["body"] == "Hi Ada"
    delivery = await delivery_of(api, tenant, notification, "read")
    assert delivery["provider_message_id"] == sent.wamid
    _read_in_order(delivery)


@pytest.mark.usefixtures("worker", "served")
async def test_last_used_answers_on_the_number_the_contact_last_wrote_to(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    with FakeWhatsApp(phone_number_id="111") as sales, FakeWhatsApp(phone_number_id="222") as care:
        await whatsapp_channel(api, tenant, sales, slug="wa-sales")
        await whatsapp_channel(api, tenant, care, slug="wa-care")
        await add_ada(api, tenant)
        await ada_writes(sales, "hello sales")
        await ada_writes(care, "hello care")

        await notify(api, tenant, "last_used", {"kind": "text", "text": "From care"})

        (sent,) = await asyncio.to_thread(care.wait_for, 1)
        assert sent.body["text"]["body"] == "From care"
        assert sales.sent == []
    contact = await api.get("/v1/contacts/ada", headers=tenant.headers())
    assert contact.json()["last_channel"] == "wa-care"


@pytest.mark.usefixtures("worker", "served")
async def test_an_sms_notification_is_delivered_and_read_through_signed_callbacks(
    api: httpx.AsyncClient, tenant: TenantKeys, twilio: FakeTwilio
) -> None:
    await sms_channel(api, tenant, twilio)
    await add_ada(api, tenant)

    notification = await notify(
        api, tenant, "sms", {"kind": "text", "text": "Hi {{ contact.name }}"}
    )

    (sent,) = await asyncio.to_thread(twilio.wait_for, 1)
    assert (sent.to, sent.body, sent.from_) == (PHONE, "Hi Ada", twilio.numbers[0])
    assert sent.status_callback.endswith(f"/v1/webhooks/{tenant.slug}/sms")
    delivery = await delivery_of(api, tenant, notification, "read")
    assert delivery["provider_message_id"] == sent.sid
    assert delivery["segments"] == 1
    _read_in_order(delivery)


@pytest.mark.usefixtures("worker", "served")
async def test_outside_the_window_only_a_template_goes_and_a_free_form_message_fails_for_good(
    api: httpx.AsyncClient, tenant: TenantKeys, whatsapp: FakeWhatsApp
) -> None:
    await whatsapp_channel(api, tenant, whatsapp)
    await add_ada(api, tenant)  # Ada has never written: the window is closed

    refused = await notify(api, tenant, "wa", {"kind": "text", "text": "Hi"})
    template = {"name": "renewal_reminder", "language": "es", "body": ["{{ contact.name }}"]}
    fallback = await notify(
        api, tenant, "wa", {"kind": "text", "text": "Hi", "outside_window": template}
    )

    failed = await delivery_of(api, tenant, refused, "failed")
    assert "24-hour customer-service window" in failed["error"]
    await delivery_of(api, tenant, fallback, "read")
    (sent,) = whatsapp.sent
    assert sent.type == "template"
    assert sent.body["template"]["name"] == "renewal_reminder"
    assert sent.body["template"]["components"] == [
        {"type": "body", "parameters": [{"type": "text", "text": "Ada"}]}
    ]


# --- follow-ups ---------------------------------------------------------------------------------


@pytest.fixture
def itsm() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        server.serve_json("/api/tickets", {"result": [TICKET]})
        yield server


async def _records(
    api: httpx.AsyncClient, tenant: TenantKeys, followup_id: str
) -> list[dict[str, Any]]:
    answer = await api.get(f"/v1/followups/{followup_id}/records", headers=tenant.headers())
    assert answer.status_code == 200, answer.text
    records: list[dict[str, Any]] = answer.json()["items"]
    return records


@pytest.mark.usefixtures("worker", "served")
@pytest.mark.parametrize("kind", ["whatsapp", "sms"])
async def test_a_follow_up_reminder_goes_out_and_its_record_shows_it_read(
    kind: str,
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    whatsapp: FakeWhatsApp,
    twilio: FakeTwilio,
    itsm: WebhookReceiver,
) -> None:
    if kind == "whatsapp":
        await whatsapp_channel(api, tenant, whatsapp, slug="phone")
    else:
        await sms_channel(api, tenant, twilio, slug="phone")
    await add_ada(api, tenant)
    if kind == "whatsapp":
        await ada_writes(whatsapp)
    await api.put("/v1/secrets/ITSM_TOKEN", json={"value": "t0ken"}, headers=tenant.headers())
    definition = followup_definition(
        itsm.base_url,
        channel="phone",
        recipients={"user": {"source": "approver.email", "match_on": "email"}},
    )
    answer = await api.post("/v1/followups", json=definition, headers=tenant.headers())
    assert answer.status_code == 201, answer.text
    followup = answer.json()

    if kind == "whatsapp":
        (sent,) = await asyncio.to_thread(whatsapp.wait_for, 1)
        interactive = sent.body["interactive"]
        assert interactive["type"] == "button"
        assert [b["reply"]["title"] for b in interactive["action"]["buttons"]] == [
            "Approve",
            "Reject",
        ]
    else:
        (sms,) = await asyncio.to_thread(twilio.wait_for, 1)
        assert sms.body.startswith("Approval needed: INC0012")
        assert "Approve: http://127.0.0.1" in sms.body  # the card's buttons, as links

    async def read_record() -> dict[str, Any] | None:
        (record,) = await _records(api, tenant, followup["id"])
        deliveries = record["deliveries"]
        return record if deliveries and deliveries[0]["status"] == "read" else None

    record = await eventually(read_record, message="the reminder is read")
    _read_in_order(record["deliveries"][0])


@pytest.mark.usefixtures("worker", "served")
async def test_pressing_a_whatsapp_reply_button_runs_the_cards_action(
    api: httpx.AsyncClient, tenant: TenantKeys, whatsapp: FakeWhatsApp, itsm: WebhookReceiver
) -> None:
    itsm.serve_json("/api/tickets/INC0012/approve", {"id": "A-1"})
    await whatsapp_channel(api, tenant, whatsapp, slug="phone")
    await add_ada(api, tenant)
    await ada_writes(whatsapp)
    await api.put("/v1/secrets/ITSM_TOKEN", json={"value": "t0ken"}, headers=tenant.headers())
    definition = followup_definition(
        itsm.base_url,
        channel="phone",
        recipients={"user": {"source": "approver.email", "match_on": "email"}},
    )
    answer = await api.post("/v1/followups", json=definition, headers=tenant.headers())
    followup = answer.json()
    await asyncio.to_thread(whatsapp.wait_for, 1)

    pressed, _ = await asyncio.to_thread(
        whatsapp.press_button, WA_ID, "approve", "Approve", interactive=True
    )
    assert pressed.status_code == 200, pressed.text

    async def ended() -> dict[str, Any] | None:
        (record,) = await _records(api, tenant, followup["id"])
        return record if record["state"] != "following" else None

    record = await eventually(ended, message="the press ends the record")
    assert "approve" in (record["end_reason"] or "") + (record["ended_by"] or "")
    approvals = [r for r in itsm.requests if r.path_only.endswith("/INC0012/approve")]
    assert len(approvals) == 1


# --- journeys -----------------------------------------------------------------------------------


def _journey(channel: str) -> dict[str, Any]:
    return {
        "name": "Renewal",
        "trigger": {"type": "api"},
        "settings": {},
        "steps": [
            {
                "id": "greet",
                "type": "send_message",
                "channel": channel,
                "message": {"kind": "text", "text": "Hello {{ contact.name }}"},
            },
            {
                "id": "question",
                "type": "ask",
                "channel": channel,
                "message": {"kind": "text", "text": "Renew now?"},
                "variable": "reply",
                "timeout_minutes": 60,
            },
            {
                "id": "thanks",
                "type": "send_message",
                "channel": channel,
                "message": {"kind": "text", "text": "You said {{ variables.reply }}"},
            },
        ],
    }


@pytest.mark.usefixtures("worker", "served")
async def test_a_whatsapp_reply_answers_a_journey_ask(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    whatsapp: FakeWhatsApp,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await whatsapp_channel(api, tenant, whatsapp)
    await add_ada(api, tenant)
    await ada_writes(whatsapp)
    journey = await create(api, tenant, _journey("wa"))
    assert (await enroll(api, tenant, journey["id"])).status_code == 201

    await asyncio.to_thread(whatsapp.wait_for, 2)  # the greeting and the question
    await ada_writes(whatsapp, "Yes please")

    sent = await asyncio.to_thread(whatsapp.wait_for, 3)
    assert [m.body["text"]["body"] for m in sent] == [
        "Hello Ada",
        "Renew now?",
        "You said Yes please",
    ]
    async with sessions() as session:
        incoming = await session.scalar(
            select(func.count())
            .select_from(Message)
            .where(Message.tenant_id == tenant.id, Message.direction == "incoming")
        )
    assert incoming == 2


@pytest.mark.usefixtures("worker", "served")
async def test_an_sms_reply_answers_a_journey_ask_and_marks_the_question_replied(
    api: httpx.AsyncClient, tenant: TenantKeys, twilio: FakeTwilio
) -> None:
    await sms_channel(api, tenant, twilio)
    await add_ada(api, tenant)
    journey = await create(api, tenant, _journey("sms"))
    assert (await enroll(api, tenant, journey["id"])).status_code == 201

    await asyncio.to_thread(twilio.wait_for, 2)
    answer, _sid = await asyncio.to_thread(twilio.send_sms, PHONE, "Sure")
    assert answer.status_code == 200, answer.text
    assert "<Response>" in answer.text  # TwiML that sends no reply of its own

    sent = await asyncio.to_thread(twilio.wait_for, 3)
    assert sent[-1].body == "You said Sure"

    async def replied() -> dict[str, Any] | None:
        answer = await api.get(
            "/v1/contacts/ada/journeys",
            params={"include_ended": True},
            headers=tenant.headers("agent"),
        )
        (enrollment,) = answer.json()["items"]
        question = [d for d in enrollment["deliveries"] if d["replied_at"] is not None]
        return enrollment if question else None

    enrollment = await eventually(replied, message="the question is marked replied")
    # The newest message before the reply is the one replied to: the question.
    by_time = sorted(enrollment["deliveries"], key=lambda d: d["created_at"])
    assert by_time[1]["replied_at"] is not None
    assert by_time[0]["replied_at"] is None


# --- webhooks -----------------------------------------------------------------------------------


@pytest.mark.usefixtures("served")
async def test_unsigned_or_badly_signed_webhooks_are_refused_and_store_nothing(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    whatsapp: FakeWhatsApp,
    twilio: FakeTwilio,
    served: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    wa = await whatsapp_channel(api, tenant, whatsapp)
    sms = await sms_channel(api, tenant, twilio)
    body = b'{"object":"whatsapp_business_account","entry":[]}'
    form = {"MessageSid": "SM" + "a" * 32, "MessageStatus": "delivered"}
    async with httpx.AsyncClient() as client:
        answers = [
            await client.post(wa["webhook_url"], content=body),
            await client.post(
                wa["webhook_url"], content=body, headers={"X-Hub-Signature-256": "sha256=00"}
            ),
            await client.post(
                wa["webhook_url"],
                content=body + b" ",
                headers={"X-Hub-Signature-256": whatsapp.sign(body)},
            ),
            await client.post(sms["webhook_url"], data=form),
            await client.post(sms["webhook_url"], data=form, headers={"X-Twilio-Signature": "x"}),
            await client.post(
                f"{served}/v1/webhooks/nobody/wa",
                content=body,
                headers={"X-Hub-Signature-256": whatsapp.sign(body)},
            ),
        ]
    assert [a.status_code for a in answers] == [401] * 6
    async with sessions() as session:
        kept = await session.scalar(
            select(func.count())
            .select_from(DeliveryReceipt)
            .where(DeliveryReceipt.tenant_id == tenant.id)
        )
    assert kept == 0


@pytest.mark.usefixtures("served")
async def test_the_whatsapp_handshake_answers_the_challenge_for_the_verify_token_only(
    api: httpx.AsyncClient, tenant: TenantKeys, whatsapp: FakeWhatsApp
) -> None:
    wa = await whatsapp_channel(api, tenant, whatsapp)
    async with httpx.AsyncClient() as client:
        good = await client.get(
            wa["webhook_url"],
            params={
                "hub.mode": "subscribe",
                "hub.verify_token": "verify-me",
                "hub.challenge": "1158201444",
            },
        )
        bad = await client.get(
            wa["webhook_url"],
            params={
                "hub.mode": "subscribe",
                "hub.verify_token": "guess",
                "hub.challenge": "1158201444",
            },
        )
    assert (good.status_code, good.text) == (200, "1158201444")
    assert bad.status_code == 403


@pytest.mark.usefixtures("worker", "served")
async def test_receipts_out_of_order_never_move_a_delivery_back_and_unknown_ids_are_accepted(
    api: httpx.AsyncClient, tenant: TenantKeys, whatsapp: FakeWhatsApp
) -> None:
    whatsapp.auto_receipts = ()
    await whatsapp_channel(api, tenant, whatsapp)
    await add_ada(api, tenant)
    await ada_writes(whatsapp)
    notification = await notify(api, tenant, "wa", {"kind": "text", "text": "Hi"})
    (sent,) = await asyncio.to_thread(whatsapp.wait_for, 1)
    await delivery_of(api, tenant, notification, "sent")

    for status in ("read", "delivered", "sent", "failed", "read"):
        answer = await asyncio.to_thread(whatsapp.send_status, sent.wamid, status)
        assert answer.status_code == 200, answer.text
    unknown = await asyncio.to_thread(whatsapp.send_status, "wamid.unknown", "delivered")
    assert unknown.status_code == 200

    delivery = await delivery_of(api, tenant, notification, "read")
    assert delivery["delivered_at"] == delivery["read_at"]  # read implies delivered
    assert [r["status"] for r in delivery["receipts"]] == ["read", "delivered", "sent", "failed"]


@pytest.mark.usefixtures("worker", "served")
async def test_a_failed_receipt_records_the_providers_code_and_reason(
    api: httpx.AsyncClient, tenant: TenantKeys, whatsapp: FakeWhatsApp
) -> None:
    whatsapp.auto_receipts = ()
    await whatsapp_channel(api, tenant, whatsapp)
    await add_ada(api, tenant)
    await ada_writes(whatsapp)
    notification = await notify(api, tenant, "wa", {"kind": "text", "text": "Hi"})
    (sent,) = await asyncio.to_thread(whatsapp.wait_for, 1)
    await delivery_of(api, tenant, notification, "sent")
    await asyncio.to_thread(whatsapp.send_status, sent.wamid, "failed", error_code=131026)

    delivery = await delivery_of(api, tenant, notification, "failed")
    assert delivery["error_code"] == "131026"
    assert delivery["failed_at"] is not None


# --- fallback -----------------------------------------------------------------------------------


@pytest.mark.usefixtures("worker", "served")
async def test_a_send_refused_for_good_falls_back_to_the_next_channel_once(
    api: httpx.AsyncClient, tenant: TenantKeys, whatsapp: FakeWhatsApp, twilio: FakeTwilio
) -> None:
    await sms_channel(api, tenant, twilio)
    await whatsapp_channel(api, tenant, whatsapp, fallback=["sms"])
    await add_ada(api, tenant)
    await ada_writes(whatsapp)
    whatsapp.fail_next(400, 131026, "Message undeliverable")

    notification = await notify(api, tenant, "wa", {"kind": "text", "text": "Your code is 1234"})

    (sms,) = await asyncio.to_thread(twilio.wait_for, 1)
    assert sms.body == "Your code is 1234"

    async def fallen_back() -> dict[str, Any] | None:
        delivery = await delivery_of(api, tenant, notification, "failed")
        fallbacks = delivery["fallbacks"]
        return delivery if fallbacks and fallbacks[0]["status"] == "read" else None

    delivery = await eventually(fallen_back, message="the SMS fallback is read")
    assert "131026" in delivery["error"]
    (fallback,) = delivery["fallbacks"]
    assert fallback["channel"] == "sms"
    assert fallback["provider_message_id"] == sms.sid
    assert whatsapp.sent == []


@pytest.mark.usefixtures("worker", "served")
async def test_a_message_not_delivered_in_time_is_sent_on_the_fallback_channel(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    whatsapp: FakeWhatsApp,
    twilio: FakeTwilio,
    time_env: WorkflowEnvironment,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    whatsapp.auto_receipts = ("sent",)  # accepted, never delivered
    await sms_channel(api, tenant, twilio)
    await whatsapp_channel(api, tenant, whatsapp, fallback=["sms"], fallback_after_minutes=30)
    await add_ada(api, tenant)
    await ada_writes(whatsapp)

    notification = await notify(api, tenant, "wa", {"kind": "text", "text": "Still there?"})
    sent = await delivery_of(api, tenant, notification, "sent")
    watch = time_env.client.get_workflow_handle(
        delivery_fallback_workflow_id(tenant.slug, sent["id"])
    )

    async def started() -> bool:
        try:
            await watch.describe()
        except Exception:
            return False
        return True

    await relay_all(time_env.client, sessions, tenant)  # what every worker's relay loop does
    await eventually(started, message="the fallback watch starts")
    await time_env.sleep(timedelta(minutes=31))
    await asyncio.to_thread(twilio.wait_for, 1)

    async def closed() -> bool:
        return (await watch.describe()).status == WorkflowExecutionStatus.COMPLETED

    await eventually(closed, message="the fallback watch ends")
    outcome = await watch.result()
    await keep_history(watch, "delivery-fallback-sent")

    assert "1 fallback tries" in outcome
    (sms,) = twilio.sent
    assert sms.body == "Still there?"
    delivery = await delivery_of(api, tenant, notification, "sent")
    assert [f["channel"] for f in delivery["fallbacks"]] == ["sms"]


@pytest.mark.usefixtures("worker", "served")
async def test_a_message_the_provider_reports_failed_falls_back_at_once(
    api: httpx.AsyncClient, tenant: TenantKeys, whatsapp: FakeWhatsApp, twilio: FakeTwilio
) -> None:
    whatsapp.auto_receipts = ()
    await sms_channel(api, tenant, twilio)
    await whatsapp_channel(api, tenant, whatsapp, fallback=["sms"])
    await add_ada(api, tenant)
    await ada_writes(whatsapp)
    notification = await notify(api, tenant, "wa", {"kind": "text", "text": "Your code is 99"})
    (sent,) = await asyncio.to_thread(whatsapp.wait_for, 1)
    await delivery_of(api, tenant, notification, "sent")

    answer = await asyncio.to_thread(whatsapp.send_status, sent.wamid, "failed")
    assert answer.status_code == 200, answer.text

    (sms,) = await asyncio.to_thread(twilio.wait_for, 1)
    assert sms.body == "Your code is 99"
    delivery = await delivery_of(api, tenant, notification, "failed")
    assert delivery["error_code"] == "131026"


# --- contacts and channel configs ---------------------------------------------------------------


async def test_a_contact_phone_is_stored_as_e164_and_an_invalid_one_is_a_422(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    await add_ada(api, tenant, phone="0034 600-11-12-22")
    answer = await api.put("/v1/contacts/bob", json={"phone": "+34 12"}, headers=tenant.headers())
    assert "body.phone" in problems(answer)
    answer = await api.put(
        "/v1/contacts/bob",
        json={"phone": PHONE, "whatsapp_id": "+34 600"},
        headers=tenant.headers(),
    )
    assert "body.whatsapp_id" in problems(answer)


async def test_channel_credentials_are_never_returned_and_fallbacks_must_exist(
    api: httpx.AsyncClient, tenant: TenantKeys, whatsapp: FakeWhatsApp, twilio: FakeTwilio
) -> None:
    wa = await whatsapp_channel(api, tenant, whatsapp)
    assert wa["credentials_set"] == ["access_token", "app_secret", "verify_token"]
    assert whatsapp.access_token not in str(wa) and whatsapp.app_secret not in str(wa)
    sms = await sms_channel(api, tenant, twilio)
    assert sms["credentials_set"] == ["auth_token"] and twilio.auth_token not in str(sms)

    body = {"type": "log", "fallback": ["wa", "nowhere", "log2"]}
    answer = await api.put("/v1/channels/log2", json=body, headers=tenant.headers())
    assert problems(answer) == {
        "body.fallback.1": "no channel 'nowhere'",
        "body.fallback.2": "a channel cannot fall back on itself",
    }
    config = {"account_sid": twilio.account_sid, "auth_token": "x", "base_url": twilio.base_url}
    answer = await api.put(
        "/v1/channels/s2", json={"type": "sms", "config": config}, headers=tenant.headers()
    )
    assert problems(answer) == {
        "body.config": "Value error, give exactly one of `from` and `messaging_service_sid`"
    }


async def test_a_webhook_channel_receiver_reports_receipts_by_idempotency_key(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    make_tenant: Any,
    worker: Any,
) -> None:
    await _put_channel(
        api, tenant, "hook", {"type": "webhook", "config": {"url": webhook_receiver.url}}
    )
    await add_ada(api, tenant)
    notification = await notify(api, tenant, "hook", {"kind": "text", "text": "Hi"})
    await delivery_of(api, tenant, notification, "sent")
    key = webhook_receiver.requests[0].headers["idempotency-key"]
    service = tenant.headers("service")

    read = await api.post(
        "/v1/events/receipts", json={"idempotency_key": key, "status": "read"}, headers=service
    )
    late = await api.post(
        "/v1/events/receipts", json={"idempotency_key": key, "status": "delivered"}, headers=service
    )
    other = await make_tenant()
    foreign = await api.post(
        "/v1/events/receipts",
        json={"idempotency_key": key, "status": "failed"},
        headers=other.headers("service"),
    )

    assert read.json() == {"status": "accepted", "delivery_status": "read"}
    assert late.json() == {"status": "accepted", "delivery_status": "read"}
    assert foreign.json() == {"status": "unknown_message", "delivery_status": None}
    delivery = await delivery_of(api, tenant, notification, "read")
    assert delivery["delivered_at"] is not None


# --- the inbox on WhatsApp -----------------------------------------------------------------


@pytest.mark.usefixtures("worker", "served")
async def test_an_agent_answers_a_whatsapp_contact_and_the_journey_ends_on_the_answer(
    api: httpx.AsyncClient, tenant: TenantKeys, whatsapp: FakeWhatsApp
) -> None:
    admin = tenant.headers()
    await whatsapp_channel(api, tenant, whatsapp)
    await add_ada(api, tenant)
    queue = {"name": "Support", "default_for_channels": ["wa"]}
    assert (await api.put("/v1/queues/support", json=queue, headers=admin)).status_code == 200
    grace = {"name": "Grace", "email": "grace@corp.example", "queues": ["support"]}
    assert (await api.put("/v1/agents/grace", json=grace, headers=admin)).status_code == 200
    key = await api.post("/v1/api-keys", json={"role": "agent", "agent": "grace"}, headers=admin)
    agent = {"Authorization": f"Bearer {key.json()['api_key']}"}
    waiting = {
        "name": "Waiting for an agent",
        "trigger": {"type": "api"},
        "settings": {"exit_conditions": ["outgoing_message"]},
        "steps": [{"id": "hold", "type": "wait", "minutes": 600}],
    }
    journey = await create(api, tenant, waiting)
    assert (await enroll(api, tenant, journey["id"])).status_code == 201

    await ada_writes(whatsapp, "I need help with my order")

    async def queued() -> dict[str, Any] | None:
        items = (await api.get("/v1/interactions", headers=agent)).json()["items"]
        return items[0] if items else None

    interaction = await eventually(queued, message="the WhatsApp message is in the queue")
    assert (interaction["status"], interaction["channel"]) == ("new", "wa")
    opened = await api.post(f"/v1/interactions/{interaction['id']}/open", headers=agent)
    assert opened.status_code == 200, opened.text
    answer = await api.post(
        f"/v1/interactions/{interaction['id']}/reply",
        json={"text": "Looking at it now, Ada"},
        headers=agent,
    )
    assert answer.status_code == 200, answer.text

    (sent,) = await asyncio.to_thread(whatsapp.wait_for, 1)
    assert (sent.to, sent.body["text"]["body"]) == (WA_ID, "Looking at it now, Ada")

    async def ended() -> dict[str, Any] | None:
        answer = await api.get(
            "/v1/contacts/ada/journeys", params={"include_ended": True}, headers=agent
        )
        (enrollment,) = answer.json()["items"]
        return enrollment if enrollment["state"] != "active" else None

    enrollment = await eventually(ended, message="the journey ends on the agent's answer")
    assert enrollment["state"] == "exited"
    listed = (await api.get(f"/v1/interactions/{interaction['id']}", headers=agent)).json()
    assert listed["status"] == "resolved"
