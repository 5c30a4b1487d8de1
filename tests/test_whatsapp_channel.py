"""The WhatsApp channel and webhooks against FakeWhatsApp, a real Cloud API stand-in on
127.0.0.1 that refuses what Meta refuses."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from nudge.dev.fake_whatsapp import FakeWhatsApp
from nudge.egress import EgressPolicy, tenant_http_client
from nudge.messaging.channels.base import (
    Outbound,
    ProviderRejected,
    ProviderUnavailable,
    Recipient,
    RecipientUnreachable,
)
from nudge.messaging.channels.whatsapp import WhatsAppChannel, phone_number_health
from nudge.messaging.inbound import BadSignature, BadWebhook, InboundMessage, StatusUpdate
from nudge.messaging.providers.whatsapp import handshake, parse_webhook, verify_signature
from nudge.models.channels import WhatsAppConfig
from nudge.models.messages import (
    AnyMessage,
    Button,
    Card,
    CardMessage,
    Image,
    ImageMessage,
    TextMessage,
    WhatsAppTemplate,
    WhatsAppTemplateMessage,
)
from tests.utils.egress import loopback_http
from tests.utils.receivers import ReceivedRequest, Reply, WebhookReceiver, free_port
from tests.utils.waiting import eventually

PHONE = "+34600111222"
WA_ID = "34600111222"
SECRET = "fake-app-secret"
ENVELOPE = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": WA_ID}


@pytest.fixture
def fake() -> Iterator[FakeWhatsApp]:
    with FakeWhatsApp() as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with loopback_http() as client:
        yield client


def config(base_url: str, **overrides: Any) -> WhatsAppConfig:
    return WhatsAppConfig.model_validate(
        {
            "phone_number_id": "106540352242922",
            "access_token": "fake-wa-token",
            "app_secret": SECRET,
            "verify_token": "let-me-in",
            "base_url": base_url,
            **overrides,
        }
    )


def channel(fake: FakeWhatsApp, http: httpx.AsyncClient, **overrides: Any) -> WhatsAppChannel:
    return WhatsAppChannel(config(fake.base_url, **overrides), http)


def outbound(message: AnyMessage, recipient: Recipient | None = None) -> Outbound:
    return Outbound(
        tenant="acme",
        channel="wa",
        idempotency_key="followup/acme/invoices/record/INC001:1:c1:wa",
        recipient=recipient or Recipient(external_id="c1", name="Ada", phone=PHONE),
        message=message,
    )


def card(*buttons: Button, image_url: str | None = "https://example.com/logo.png") -> CardMessage:
    return CardMessage(
        card=Card(
            title="Invoice INC001 is overdue",
            text="Please pay today.",
            image_url=image_url,
            buttons=list(buttons),
        )
    )


def button(action: str, label: str) -> Button:
    return Button(label=label, action=action, url=f"https://nudge.example.com/v1/actions/{action}")


# --- sending: each kind, exactly as it leaves ----------------------------------------------------


async def test_text_goes_as_a_text_message_and_the_wamid_comes_back(
    fake: FakeWhatsApp, http: httpx.AsyncClient
) -> None:
    # Rendered text is data: a message that reads like a template goes out as written.
    rendered = TextMessage.model_construct(kind="text", text="Hello Ada, see {{ x")

    receipt = await channel(fake, http).send(outbound(rendered))

    [sent] = fake.sent
    assert sent.body == {
        **ENVELOPE,
        "type": "text",
        "text": {"body": "Hello Ada, see {{ x", "preview_url": False},
    }
    assert sent.wamid.startswith("wamid.")
    assert receipt.provider_message_id == sent.wamid
    assert receipt.response["status_code"] == 200


async def test_a_long_text_is_cut_to_4096_characters(
    fake: FakeWhatsApp, http: httpx.AsyncClient
) -> None:
    await channel(fake, http).send(outbound(TextMessage(text="x" * 5000)))

    body = fake.sent[0].body["text"]["body"]
    assert len(body) == 4096
    assert body.endswith("x…")


async def test_the_whatsapp_id_is_preferred_to_the_phone(
    fake: FakeWhatsApp, http: httpx.AsyncClient
) -> None:
    recipient = Recipient(external_id="c1", phone="+34 600 111 222", whatsapp_id="34600999888")

    await channel(fake, http).send(outbound(TextMessage(text="Hi"), recipient))

    assert fake.sent[0].to == "34600999888"


async def test_a_recipient_without_a_number_is_unreachable(
    fake: FakeWhatsApp, http: httpx.AsyncClient
) -> None:
    with pytest.raises(RecipientUnreachable):
        await channel(fake, http).send(
            outbound(TextMessage(text="Hi"), Recipient(external_id="c1", email="ada@example.com"))
        )
    assert fake.sent == []


async def test_an_image_goes_by_link_with_its_caption(
    fake: FakeWhatsApp, http: httpx.AsyncClient
) -> None:
    message = ImageMessage(image=Image(url="https://example.com/chart.png", caption="March"))

    await channel(fake, http).send(outbound(message))

    assert fake.sent[0].body == {
        **ENVELOPE,
        "type": "image",
        "image": {"link": "https://example.com/chart.png", "caption": "March"},
    }


async def test_a_card_with_two_buttons_is_an_interactive_reply_buttons_message(
    fake: FakeWhatsApp, http: httpx.AsyncClient
) -> None:
    message = card(button("pay", "Pay now"), button("dispute", "I do not owe this invoice"))

    await channel(fake, http).send(outbound(message))

    assert fake.sent[0].body == {
        **ENVELOPE,
        "type": "interactive",
        "interactive": {
            "type": "button",
            "header": {"type": "image", "image": {"link": "https://example.com/logo.png"}},
            "body": {"text": "Invoice INC001 is overdue\n\nPlease pay today."},
            "action": {
                "buttons": [
                    # The id is the action (a press comes back with it); the signed URL stays.
                    {"type": "reply", "reply": {"id": "pay", "title": "Pay now"}},
                    {"type": "reply", "reply": {"id": "dispute", "title": "I do not owe this i…"}},
                ]
            },
        },
    }


async def test_reply_buttons_get_distinct_ids_and_titles(
    fake: FakeWhatsApp, http: httpx.AsyncClient
) -> None:
    # WhatsApp refuses two equal ids or titles: a repeated action is one answer, so it goes
    # once; a repeated title gets a number.
    message = card(button("yes", "Yes"), button("yes", "Yes please"), button("sure", "Yes"))

    await channel(fake, http).send(outbound(message, Recipient(external_id="c1", phone=PHONE)))

    buttons = fake.sent[0].body["interactive"]["action"]["buttons"]
    assert [b["reply"] for b in buttons] == [
        {"id": "yes", "title": "Yes"},
        {"id": "sure", "title": "Yes 2"},
    ]


async def test_a_card_with_five_buttons_becomes_a_list(
    fake: FakeWhatsApp, http: httpx.AsyncClient
) -> None:
    labels = ["Pay", "Pay half now", "Call me back tomorrow morning", "Dispute", "Stop"]
    message = card(*(button(f"a{i}", label) for i, label in enumerate(labels)))

    await channel(fake, http).send(outbound(message))

    interactive = fake.sent[0].body["interactive"]
    assert interactive == {
        "type": "list",
        "body": {"text": "Invoice INC001 is overdue\n\nPlease pay today."},
        "action": {
            "button": "Options",
            "sections": [
                {
                    "rows": [
                        {"id": "a0", "title": "Pay"},
                        {"id": "a1", "title": "Pay half now"},
                        {
                            "id": "a2",
                            "title": "Call me back tomorrow m…",
                            "description": "Call me back tomorrow morning",
                        },
                        {"id": "a3", "title": "Dispute"},
                        {"id": "a4", "title": "Stop"},
                    ]
                }
            ],
        },
    }


async def test_a_card_without_buttons_is_its_image_with_a_caption(
    fake: FakeWhatsApp, http: httpx.AsyncClient
) -> None:
    await channel(fake, http).send(outbound(card()))

    assert fake.sent[0].body["image"] == {
        "link": "https://example.com/logo.png",
        "caption": "Invoice INC001 is overdue\n\nPlease pay today.",
    }


async def test_a_template_goes_with_its_parameters_and_quick_reply_payloads(
    fake: FakeWhatsApp, http: httpx.AsyncClient
) -> None:
    template = WhatsAppTemplate(
        name="invoice_overdue",
        language="es",
        header=["INC001"],
        body=["Ada", "120 €\nlate"],
        buttons=["pay:INC001", ""],
        text="Your invoice INC001 is overdue",
    )

    receipt = await channel(fake, http).send(outbound(WhatsAppTemplateMessage(template=template)))

    [sent] = fake.sent
    assert sent.body == {
        **ENVELOPE,
        "type": "template",
        "template": {
            "name": "invoice_overdue",
            "language": {"code": "es"},
            "components": [
                {"type": "header", "parameters": [{"type": "text", "text": "INC001"}]},
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": "Ada"},
                        # WhatsApp refuses new lines in a parameter (132018).
                        {"type": "text", "text": "120 € late"},
                    ],
                },
                # The second button has no payload: it is left as approved.
                {
                    "type": "button",
                    "sub_type": "quick_reply",
                    "index": "0",
                    "parameters": [{"type": "payload", "payload": "pay:INC001"}],
                },
            ],
        },
    }
    assert receipt.provider_message_id == sent.wamid


async def test_a_template_without_parameters_has_no_components(
    fake: FakeWhatsApp, http: httpx.AsyncClient
) -> None:
    message = WhatsAppTemplateMessage(
        template=WhatsAppTemplate(name="hello_world", language="en_US")
    )

    await channel(fake, http).send(outbound(message))

    assert fake.sent[0].body["template"] == {"name": "hello_world", "language": {"code": "en_US"}}


# --- the fake is as strict as the Cloud API ------------------------------------------------------


def post(fake: FakeWhatsApp, body: Any, token: str = "fake-wa-token") -> httpx.Response:
    return httpx.post(
        f"{fake.base_url}/v21.0/106540352242922/messages",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )


def reply(n: int) -> dict[str, Any]:
    return {"type": "reply", "reply": {"id": f"b{n}", "title": f"Button {n}"}}


def test_the_fake_refuses_four_reply_buttons(fake: FakeWhatsApp) -> None:
    interactive = {
        "type": "button",
        "body": {"text": "Pick one"},
        "action": {"buttons": [reply(n) for n in range(4)]},
    }

    answer = post(fake, {**ENVELOPE, "type": "interactive", "interactive": interactive})

    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["code"], error["type"], error["message"]) == (
        100,
        "OAuthException",
        "(#100) Invalid parameter",
    )
    assert "interactive['action']['buttons']" in error["error_data"]["details"]
    assert fake.sent == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"messaging_product": None}, "messaging_product"),
        ({"to": "+34600111222"}, "to"),
        ({"type": "fax"}, "type"),
        ({"text": {"body": "x" * 4097}}, "text['body']"),
        ({"text": {"body": "hi", "bold": True}}, "text['bold']"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_the_fake_refuses_malformed_messages(
    fake: FakeWhatsApp, change: dict[str, Any], field: str
) -> None:
    body = {**ENVELOPE, "type": "text", "text": {"body": "hi"}, **change}

    answer = post(fake, {k: v for k, v in body.items() if v is not None})

    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == 100
    assert f"Param {field} " in answer.json()["error"]["error_data"]["details"]


def test_the_fake_refuses_a_wrong_token_with_graph_code_190(fake: FakeWhatsApp) -> None:
    answer = post(fake, {**ENVELOPE, "type": "text", "text": {"body": "hi"}}, token="stolen")

    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == 190
    assert answer.json()["error"]["type"] == "OAuthException"


def test_the_fake_refuses_a_list_row_title_over_24_characters(fake: FakeWhatsApp) -> None:
    interactive = {
        "type": "list",
        "body": {"text": "Pick one"},
        "action": {"button": "Options", "sections": [{"rows": [{"id": "a", "title": "x" * 25}]}]},
    }

    answer = post(fake, {**ENVELOPE, "type": "interactive", "interactive": interactive})

    assert answer.status_code == 400
    assert "['rows'][0]['title']" in answer.json()["error"]["error_data"]["details"]


def test_the_fake_refuses_a_template_parameter_with_a_new_line(fake: FakeWhatsApp) -> None:
    template = {
        "name": "invoice_overdue",
        "language": {"code": "es"},
        "components": [{"type": "body", "parameters": [{"type": "text", "text": "a\nb"}]}],
    }

    answer = post(fake, {**ENVELOPE, "type": "template", "template": template})

    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == 132018


# --- errors --------------------------------------------------------------------------------------


async def test_a_bad_token_is_rejected_and_never_shown(
    fake: FakeWhatsApp, http: httpx.AsyncClient
) -> None:
    secret_token = "EAAG-the-real-token-XYZ"

    with pytest.raises(ProviderRejected) as caught:
        await channel(fake, http, access_token=secret_token).send(outbound(TextMessage(text="Hi")))

    assert "190" in str(caught.value)
    assert caught.value.response["error_code"] == 190
    assert secret_token not in str(caught.value)
    assert secret_token not in json.dumps(caught.value.response)


async def test_outside_the_24_hour_window_is_rejected(
    fake: FakeWhatsApp, http: httpx.AsyncClient
) -> None:
    fake.fail_next(400, 131047, "(#131047) Re-engagement message")

    with pytest.raises(ProviderRejected) as caught:
        await channel(fake, http).send(outbound(TextMessage(text="Hi")))

    assert "(#131047) Re-engagement message" in str(caught.value)
    assert caught.value.response["error_code"] == 131047
    assert caught.value.response["status_code"] == 400


@pytest.mark.parametrize(
    ("http_status", "code", "message"),
    [
        (400, 130429, "(#130429) Rate limit hit"),
        (400, 131056, "(#131056) (Business Account, Consumer Account) pair rate limit hit"),
        (500, 1, "An unknown error occurred"),
        (503, 131000, "(#131000) Something went wrong"),
    ],
)
async def test_throttling_and_server_errors_are_worth_a_retry(
    fake: FakeWhatsApp, http: httpx.AsyncClient, http_status: int, code: int, message: str
) -> None:
    fake.fail_next(http_status, code, message)

    with pytest.raises(ProviderUnavailable) as caught:
        await channel(fake, http).send(outbound(TextMessage(text="Hi")))

    assert message in str(caught.value)
    assert caught.value.response["error_code"] == code
    assert not caught.value.maybe_delivered
    # Only the next send fails.
    await channel(fake, http).send(outbound(TextMessage(text="Hi")))


async def test_nothing_listening_is_unavailable_and_not_delivered(http: httpx.AsyncClient) -> None:
    sender = WhatsAppChannel(config(f"http://127.0.0.1:{free_port()}"), http)

    with pytest.raises(ProviderUnavailable) as caught:
        await sender.send(outbound(TextMessage(text="Hi")))

    assert not caught.value.maybe_delivered


async def test_a_timeout_after_sending_may_have_delivered(
    webhook_receiver: WebhookReceiver, http: httpx.AsyncClient
) -> None:
    webhook_receiver.respond_with(Reply(delay_seconds=1))
    sender = WhatsAppChannel(config(webhook_receiver.base_url, timeout_seconds=0.2), http)

    with pytest.raises(ProviderUnavailable) as caught:
        await sender.send(outbound(TextMessage(text="Hi")))

    assert caught.value.maybe_delivered
    [request] = webhook_receiver.requests
    assert request.path == "/v21.0/106540352242922/messages"
    assert request.headers["authorization"] == "Bearer fake-wa-token"


async def test_the_egress_policy_applies(fake: FakeWhatsApp) -> None:
    async with tenant_http_client(EgressPolicy()) as strict:
        with pytest.raises(ProviderRejected, match="loopback"):
            await channel(fake, strict).send(outbound(TextMessage(text="Hi")))
    assert fake.sent == []


async def test_the_phone_numbers_health(fake: FakeWhatsApp, http: httpx.AsyncClient) -> None:
    fake.quality_rating, fake.messaging_limit_tier = "YELLOW", "TIER_10K"

    health = await phone_number_health(config(fake.base_url + "/"), http)

    assert health == {"quality_rating": "YELLOW", "messaging_limit_tier": "TIER_10K"}


async def test_the_health_check_with_a_bad_token_is_rejected(
    fake: FakeWhatsApp, http: httpx.AsyncClient
) -> None:
    with pytest.raises(ProviderRejected, match="190"):
        await phone_number_health(config(fake.base_url, access_token="expired"), http)


# --- signature and handshake ---------------------------------------------------------------------

BODY = b'{"object":"whatsapp_business_account","entry":[]}'


def test_a_good_signature_passes() -> None:
    verify_signature(SECRET, BODY, FakeWhatsApp(app_secret=SECRET).sign(BODY))


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=" + "0" * 64,
        FakeWhatsApp(app_secret="another-app").sign(BODY),
        FakeWhatsApp(app_secret=SECRET).sign(BODY + b" "),
        FakeWhatsApp(app_secret=SECRET).sign(BODY).replace("sha256=", "sha1="),
        "sha256=ünïcode",
    ],
    ids=["missing", "empty", "zeros", "wrong-secret", "other-body", "sha1", "non-ascii"],
)
def test_a_bad_signature_is_refused(header: str | None) -> None:
    with pytest.raises(BadSignature):
        verify_signature(SECRET, BODY, header)


def test_the_handshake_answers_the_challenge_for_the_right_token() -> None:
    params = {"hub.mode": "subscribe", "hub.challenge": "1158201444", "hub.verify_token": "t0k"}

    assert handshake(params, "t0k") == "1158201444"
    assert handshake({**params, "hub.verify_token": "guess"}, "t0k") is None
    assert handshake({**params, "hub.mode": "unsubscribe"}, "t0k") is None
    assert handshake({"hub.mode": "subscribe", "hub.verify_token": "t0k"}, "t0k") is None


# --- webhooks: what the fake posts, as Nudge reads it ---------------------------------------------


@pytest.fixture
def hooks(fake: FakeWhatsApp, webhook_receiver: WebhookReceiver) -> WebhookReceiver:
    fake.webhook_url = webhook_receiver.url
    return webhook_receiver


def last_batch(receiver: WebhookReceiver) -> Any:
    request = receiver.requests[-1]
    verify_signature(SECRET, request.body, request.headers.get("x-hub-signature-256"))
    return parse_webhook(request.body)


async def test_auto_receipts_follow_each_accepted_message_in_order(
    fake: FakeWhatsApp, hooks: WebhookReceiver, http: httpx.AsyncClient
) -> None:
    fake.auto_receipts = ("sent", "delivered", "read")

    receipt = await channel(fake, http).send(outbound(TextMessage(text="Hi")))

    def three_posts() -> list[ReceivedRequest]:
        return hooks.requests if len(hooks.requests) == 3 else []

    requests = await eventually(three_posts)
    statuses: list[StatusUpdate] = []
    for request in requests:
        verify_signature(SECRET, request.body, request.headers["x-hub-signature-256"])
        statuses += parse_webhook(request.body).statuses
    assert [(s.provider_message_id, s.status) for s in statuses] == [
        (receipt.provider_message_id, "sent"),
        (receipt.provider_message_id, "delivered"),
        (receipt.provider_message_id, "read"),
    ]
    assert all(s.at.tzinfo is UTC and s.error is None for s in statuses)


def test_a_failed_status_carries_the_error(fake: FakeWhatsApp, hooks: WebhookReceiver) -> None:
    fake.send_status(
        "wamid.X",
        "failed",
        error_code=131047,
        error_title="Re-engagement message",
        error_details="More than 24 hours have passed since the customer last replied.",
    )

    [update] = last_batch(hooks).statuses
    assert update == StatusUpdate(
        provider_message_id="wamid.X",
        status="failed",
        at=update.at,
        error_code="131047",
        error="Re-engagement message; More than 24 hours have passed since the customer last"
        " replied.",
    )


def test_a_text_from_a_contact(fake: FakeWhatsApp, hooks: WebhookReceiver) -> None:
    answer, wamid = fake.send_text(WA_ID, "Paid {{ yesterday }} — gracias", name="Ada L.")

    assert answer.status_code == 200
    [message] = last_batch(hooks).messages
    assert message == InboundMessage(
        provider_message_id=wamid,
        phone=PHONE,
        at=message.at,
        text="Paid {{ yesterday }} — gracias",
        kind="text",
        whatsapp_id=WA_ID,
        profile_name="Ada L.",
    )
    assert abs((datetime.now(UTC) - message.at).total_seconds()) < 60


def test_a_template_quick_reply_press(fake: FakeWhatsApp, hooks: WebhookReceiver) -> None:
    fake.press_button(WA_ID, "pay:INC001", "Pay now")

    [message] = last_batch(hooks).messages
    assert (message.kind, message.payload, message.text) == ("button", "pay:INC001", "Pay now")


def test_an_interactive_reply_button_press(fake: FakeWhatsApp, hooks: WebhookReceiver) -> None:
    fake.press_button(WA_ID, "dispute", "I do not owe this", interactive=True)

    [message] = last_batch(hooks).messages
    assert (message.kind, message.payload, message.text) == (
        "interactive",
        "dispute",
        "I do not owe this",
    )


def webhook(**value: Any) -> bytes:
    change = {"field": "messages", "value": {"messaging_product": "whatsapp", **value}}
    return json.dumps(
        {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [change]}]}
    ).encode()


def incoming(**content: Any) -> dict[str, Any]:
    return {"from": WA_ID, "id": "wamid.IN", "timestamp": "1749416383", **content}


def test_a_list_reply_and_an_image() -> None:
    body = webhook(
        messages=[
            incoming(
                type="interactive",
                interactive={
                    "type": "list_reply",
                    "list_reply": {"id": "a2", "title": "Call me back", "description": "…"},
                },
            ),
            incoming(type="image", image={"id": "1479537139650973", "caption": "the receipt"}),
            incoming(type="sticker", sticker={"id": "77", "animated": False}),
        ]
    )

    reply_, image, sticker = parse_webhook(body).messages

    assert (reply_.kind, reply_.payload, reply_.text) == ("interactive", "a2", "Call me back")
    assert (image.kind, image.text, image.media) == ("image", "the receipt", ["1479537139650973"])
    assert (sticker.text, sticker.profile_name) == ("[sticker]", None)
    assert image.at == datetime(2025, 6, 8, 20, 59, 43, tzinfo=UTC)


def test_other_fields_and_unknown_statuses_are_skipped() -> None:
    body = json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "1",
                    "changes": [
                        {"field": "message_template_status_update", "value": {"event": "APPROVED"}},
                        {
                            "field": "messages",
                            "value": {
                                "statuses": [
                                    {"id": "wamid.A", "status": "played", "timestamp": "1"},
                                ]
                            },
                        },
                    ],
                }
            ],
        }
    ).encode()

    batch = parse_webhook(body)

    assert batch.statuses == [] and batch.messages == []


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"not json", "not JSON"),
        (json.dumps({"object": "page", "entry": []}).encode(), "`object`"),
        (json.dumps({"object": "whatsapp_business_account"}).encode(), "body.entry is missing"),
        (webhook(statuses=[{"id": "wamid.A", "status": "sent"}]), "statuses[0].timestamp"),
        (webhook(statuses=[{"status": "sent", "timestamp": "1"}]), "statuses[0].id is missing"),
        (webhook(messages=[incoming(type="text")]), "messages[0].text is not an object"),
        (webhook(messages=[incoming(type="text", text={"body": 7})]), "text.body is not a string"),
        (webhook(messages=[{**incoming(type="text"), "from": "+34"}]), "from is not a WhatsApp id"),
        (webhook(messages="many"), "value.messages is not a list"),
    ],
)
def test_a_malformed_body_is_a_bad_webhook_naming_the_problem(body: bytes, problem: str) -> None:
    with pytest.raises(BadWebhook, match=re.escape(problem)):
        parse_webhook(body)
