"""The SMS channel, Twilio's webhooks and the fake Twilio, all over real HTTP on 127.0.0.1."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from nudge.dev.fake_twilio import DEFAULT_ACCOUNT_SID, FakeTwilio, segment_count
from nudge.egress import EgressPolicy, tenant_http_client
from nudge.messaging.channels.base import (
    ChannelError,
    Outbound,
    ProviderRejected,
    ProviderUnavailable,
    Recipient,
    RecipientUnreachable,
)
from nudge.messaging.channels.sms import MAX_BODY, TwilioSmsChannel
from nudge.messaging.inbound import BadSignature, BadWebhook, InboundMessage, StatusUpdate
from nudge.messaging.providers.twilio import parse_webhook, twiml_empty, verify_signature
from nudge.models.channels import SmsConfig
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
from tests.utils.waiting import received

TOKEN = "s3cr3t-twilio-auth-token"
NUMBER = "+15005550006"
SERVICE = "MG" + "ab" * 16
PHONE = "+34600111222"
PAY_URL = "https://nudge.example.com/v1/actions/t1"


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio(auth_token=TOKEN, numbers=(NUMBER,), messaging_service_sid=SERVICE) as twilio:
        yield twilio


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with loopback_http() as client:
        yield client


def channel(
    base_url: str, http: httpx.AsyncClient, *, token: str = TOKEN, **config: Any
) -> TwilioSmsChannel:
    settings = {
        "account_sid": DEFAULT_ACCOUNT_SID,
        "auth_token": token,
        "base_url": base_url + "/",  # the trailing slash is dropped, not doubled
        **config,
    }
    if "messaging_service_sid" not in config:
        settings["from"] = NUMBER
    return TwilioSmsChannel(SmsConfig.model_validate(settings), http)


def outbound(
    message: AnyMessage, *, phone: str | None = PHONE, callback: str | None = None
) -> Outbound:
    return Outbound(
        tenant="acme",
        channel="sms",
        idempotency_key="followup/acme/late-invoices/record/INC001:1:u1:sms",
        recipient=Recipient(external_id="u1", name="Ada Lovelace", phone=phone),
        message=message,
        status_callback_url=callback,
    )


def form(request: ReceivedRequest) -> dict[str, str]:
    return dict(parse_qsl(request.body.decode(), keep_blank_values=True))


def only_params(fake: FakeTwilio) -> dict[str, str]:
    [sms] = fake.sent
    return {name: values[0] for name, values in sms.params.items()}


# --- sending ----------------------------------------------------------------------------------


async def test_text_goes_out_with_exactly_the_expected_form_fields(
    fake: FakeTwilio, http: httpx.AsyncClient
) -> None:
    callback = "http://127.0.0.1:9/hooks/acme/sms"

    receipt = await channel(fake.base_url, http).send(
        outbound(TextMessage(text="Invoice INC001 is overdue"), callback=callback)
    )

    assert only_params(fake) == {
        "To": PHONE,
        "From": NUMBER,
        "Body": "Invoice INC001 is overdue",
        "StatusCallback": callback,
    }
    [sms] = fake.sent
    assert receipt.provider_message_id == sms.sid
    assert sms.sid.startswith("SM") and len(sms.sid) == 34
    assert receipt.segments == 1
    assert receipt.response["status_code"] == 201
    assert receipt.response["status"] == "queued"


async def test_no_status_callback_parameter_without_a_callback_url(
    fake: FakeTwilio, http: httpx.AsyncClient
) -> None:
    await channel(fake.base_url, http).send(outbound(TextMessage(text="hi")))

    assert "StatusCallback" not in only_params(fake)


async def test_card_degrades_to_text_with_links(fake: FakeTwilio, http: httpx.AsyncClient) -> None:
    card = Card(
        title="Invoice INC001 is overdue",
        text="Please pay today.",
        image_url="https://example.com/logo.png",
        buttons=[
            Button(label="Pay now", action="pay", url=PAY_URL),
            Button(label="Call me", action="call"),
        ],
    )

    await channel(fake.base_url, http).send(outbound(CardMessage(card=card)))

    assert only_params(fake) == {
        "To": PHONE,
        "From": NUMBER,
        "Body": "Invoice INC001 is overdue\nPlease pay today.\nhttps://example.com/logo.png\n"
        f"Pay now: {PAY_URL}\nCall me",
    }


async def test_image_goes_as_media_url_with_its_caption(
    fake: FakeTwilio, http: httpx.AsyncClient
) -> None:
    image = Image(url="https://example.com/chart.png", caption="This month")

    receipt = await channel(fake.base_url, http).send(outbound(ImageMessage(image=image)))

    assert only_params(fake) == {
        "To": PHONE,
        "From": NUMBER,
        "Body": "This month",
        "MediaUrl": "https://example.com/chart.png",
    }
    assert receipt.provider_message_id is not None
    assert receipt.provider_message_id.startswith("MM")  # Twilio's sid for a message with media
    assert receipt.segments == 1


async def test_image_without_caption_sends_no_body(
    fake: FakeTwilio, http: httpx.AsyncClient
) -> None:
    image = Image(url="https://example.com/chart.png")

    await channel(fake.base_url, http).send(outbound(ImageMessage(image=image)))

    assert "Body" not in only_params(fake)


async def test_image_without_an_https_url_goes_as_a_text_link(
    fake: FakeTwilio, http: httpx.AsyncClient
) -> None:
    image = Image(url="http://intranet.example/chart.png", caption="This month")

    await channel(fake.base_url, http).send(outbound(ImageMessage(image=image)))

    params = only_params(fake)
    assert "MediaUrl" not in params
    assert params["Body"] == "This month\nhttp://intranet.example/chart.png"


async def test_whatsapp_template_goes_as_its_text(
    fake: FakeTwilio, http: httpx.AsyncClient
) -> None:
    template = WhatsAppTemplate(
        name="invoice_overdue", language="es", body=["INC001"], text="INC001 está vencida"
    )

    await channel(fake.base_url, http).send(outbound(WhatsAppTemplateMessage(template=template)))

    assert only_params(fake)["Body"] == "INC001 está vencida"


async def test_whatsapp_template_without_text_is_rejected_unsent(
    fake: FakeTwilio, http: httpx.AsyncClient
) -> None:
    template = WhatsAppTemplate(name="invoice_overdue", language="es")

    with pytest.raises(ProviderRejected, match="no `text`"):
        await channel(fake.base_url, http).send(
            outbound(WhatsAppTemplateMessage(template=template))
        )

    assert fake.sent == []


@pytest.mark.parametrize(
    ("body", "segments"),
    [
        ("x" * 160, 1),
        ("x" * 200, 2),  # GSM-7: 153 characters per part once split
        ("x" * 99 + "🙂", 2),  # UCS-2: 101 units (the emoji takes two), 67 per part
        ("é" * 70, 1),  # é is in the GSM-7 table
        ("ś" * 70, 1),  # ś is not: UCS-2, 70 fit alone
    ],
)
async def test_segments_are_twilios_count(
    fake: FakeTwilio, http: httpx.AsyncClient, body: str, segments: int
) -> None:
    receipt = await channel(fake.base_url, http).send(outbound(TextMessage(text=body)))

    assert receipt.segments == segments
    assert only_params(fake)["Body"] == body  # sent whole: Twilio splits it


@pytest.mark.parametrize(
    ("body", "segments"),
    [
        ("", 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # extension characters take two septets: 160
        ("€" * 81, 2),
        ("a" * 152 + "€" + "a" * 152, 3),  # 306 septets, but the escape pair is not split
        ("ś" * 71, 2),
        ("ś" * 134, 2),
        ("ś" * 135, 3),
        ("ś" * 66 + "🙂" + "ś" * 66, 3),  # 134 units; the surrogate pair moves whole
        ("ś" * 65 + "🇪🇸" + "ś" * 65, 3),  # a flag (two code points) is one character
        ("e\u0301" * 70, 3),  # a combining accent: UCS-2, 33 two-unit characters a part
        ("👍🏽" * 17, 1),  # 68 units: modifiers stay with their emoji
    ],
)
def test_segment_count(body: str, segments: int) -> None:
    assert segment_count(body) == segments


async def test_a_body_over_1600_characters_is_cut_with_an_ellipsis(
    fake: FakeTwilio, http: httpx.AsyncClient
) -> None:
    await channel(fake.base_url, http).send(outbound(TextMessage(text="y" * 2000)))

    body = only_params(fake)["Body"]
    assert len(body) == MAX_BODY
    assert body.endswith("…")


async def test_messaging_service_replaces_from(fake: FakeTwilio, http: httpx.AsyncClient) -> None:
    sms = channel(fake.base_url, http, messaging_service_sid=SERVICE)

    receipt = await sms.send(outbound(TextMessage(text="hi")))

    assert only_params(fake) == {"To": PHONE, "MessagingServiceSid": SERVICE, "Body": "hi"}
    assert receipt.response["status"] == "accepted"
    # Twilio answers num_segments "0" until the service picks a sender: unknown, not zero.
    assert receipt.segments is None


async def test_a_recipient_without_phone_is_unreachable(
    fake: FakeTwilio, http: httpx.AsyncClient
) -> None:
    with pytest.raises(RecipientUnreachable, match="no phone"):
        await channel(fake.base_url, http).send(outbound(TextMessage(text="hi"), phone=None))

    assert fake.sent == []


# --- what Twilio refuses, and how Nudge reads it ----------------------------------------------


async def raw_post(
    http: httpx.AsyncClient,
    fake: FakeTwilio,
    data: dict[str, Any] | None = None,
    *,
    account: str = DEFAULT_ACCOUNT_SID,
    auth: tuple[str, str] = (DEFAULT_ACCOUNT_SID, TOKEN),
    **options: Any,
) -> httpx.Response:
    url = f"{fake.base_url}/2010-04-01/Accounts/{account}/Messages.json"
    return await http.post(url, data=data, auth=auth, **options)


def twilio_error(response: httpx.Response) -> tuple[int, int]:
    body = response.json()
    assert set(body) == {"code", "message", "more_info", "status"}
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{body['code']}"
    assert body["status"] == response.status_code
    return response.status_code, body["code"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"To": "600111222", "From": NUMBER, "Body": "hi"}, (400, 21211)),
        ({"To": NUMBER, "From": NUMBER, "Body": "hi"}, (400, 21211)),  # a number to itself
        ({"From": NUMBER, "Body": "hi"}, (400, 21604)),
        ({"To": PHONE, "Body": "hi"}, (400, 21603)),
        ({"To": PHONE, "From": "+15550001111", "Body": "hi"}, (400, 21606)),
        ({"To": PHONE, "MessagingServiceSid": "MG" + "cd" * 16, "Body": "hi"}, (400, 21701)),
        ({"To": PHONE, "MessagingServiceSid": "MG123", "Body": "hi"}, (400, 21705)),
        ({"To": PHONE, "From": NUMBER}, (400, 21602)),
        ({"To": PHONE, "MessagingServiceSid": SERVICE}, (400, 21619)),
        ({"To": PHONE, "From": NUMBER, "Body": "z" * 1601}, (400, 21617)),
        ({"To": PHONE, "From": NUMBER, "MediaUrl": "example.com/a.png"}, (400, 21620)),
        (
            {"To": PHONE, "From": NUMBER, "MediaUrl": [f"https://e.com/{i}" for i in range(11)]},
            (400, 21623),
        ),
        ({"To": PHONE, "From": NUMBER, "Body": "hi", "StatusCallback": "not a url"}, (400, 21609)),
        (
            {"To": PHONE, "From": NUMBER, "Body": "hi", "StatusCallback": "https://my_host/x"},
            (400, 21609),
        ),
    ],
)
async def test_the_fake_refuses_what_twilio_refuses(
    fake: FakeTwilio, http: httpx.AsyncClient, data: dict[str, Any], expected: tuple[int, int]
) -> None:
    response = await raw_post(http, fake, data)

    assert twilio_error(response) == expected
    assert fake.sent == []


async def test_the_fake_answers_bad_to_with_twilios_message(
    fake: FakeTwilio, http: httpx.AsyncClient
) -> None:
    response = await raw_post(http, fake, {"To": "600111222", "From": NUMBER, "Body": "hi"})

    assert response.json()["message"] == "The 'To' number 600111222 is not a valid phone number."


async def test_the_fake_wants_basic_auth_of_the_account(
    fake: FakeTwilio, http: httpx.AsyncClient
) -> None:
    data = {"To": PHONE, "From": NUMBER, "Body": "hi"}

    wrong_token = await raw_post(http, fake, data, auth=(DEFAULT_ACCOUNT_SID, "nope"))
    no_auth = await http.post(
        f"{fake.base_url}/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Messages.json", data=data
    )
    other_account = await raw_post(http, fake, data, account="AC" + "1" * 32)

    assert twilio_error(wrong_token) == (401, 20003)
    assert wrong_token.json()["message"] == "Authenticate"
    assert twilio_error(no_auth) == (401, 20003)
    assert twilio_error(other_account) == (404, 20404)
    assert fake.sent == []


async def test_the_fake_reads_only_form_encoded_bodies(
    fake: FakeTwilio, http: httpx.AsyncClient
) -> None:
    response = await raw_post(http, fake, json={"To": PHONE, "From": NUMBER, "Body": "hi"})

    assert twilio_error(response) == (400, 21604)  # the JSON carries no form parameters


async def test_the_fake_ignores_parameters_it_does_not_know(
    fake: FakeTwilio, http: httpx.AsyncClient
) -> None:
    data = {"To": PHONE, "From": NUMBER, "Body": "hi", "Colour": "blue"}

    response = await raw_post(http, fake, data)

    assert response.status_code == 201
    message = response.json()
    assert message["status"] == "queued"
    assert message["direction"] == "outbound-api"
    assert message["num_segments"] == "1"
    assert message["num_media"] == "0"
    assert message["from"] == NUMBER
    assert message["error_code"] is None
    assert (
        message["uri"]
        == f"/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Messages/{message['sid']}.json"
    )
    assert message["date_created"].endswith("+0000")
    assert fake.sent[0].params["Colour"] == ["blue"]


async def test_a_bad_to_is_rejected_with_twilios_code_and_message(
    fake: FakeTwilio, http: httpx.AsyncClient
) -> None:
    with pytest.raises(ProviderRejected) as caught:
        await channel(fake.base_url, http).send(outbound(TextMessage(text="hi"), phone="0034600"))

    error = caught.value
    assert not error.retryable
    assert "21211" in str(error)
    assert "The 'To' number 0034600 is not a valid phone number." in str(error)
    assert error.response["code"] == 21211
    assert error.response["status_code"] == 400
    assert error.response["more_info"] == "https://www.twilio.com/docs/errors/21211"


@pytest.mark.parametrize(
    ("http_status", "code", "message"),
    [
        (400, 21610, "Attempt to send to unsubscribed recipient"),
        (400, 21408, "Permission to send an SMS has not been enabled for the region"),
        (403, 20003, "Permission Denied"),
    ],
)
async def test_twilio_4xx_is_rejected(
    fake: FakeTwilio, http: httpx.AsyncClient, http_status: int, code: int, message: str
) -> None:
    fake.fail_next(http_status, code, message)

    with pytest.raises(ProviderRejected) as caught:
        await channel(fake.base_url, http).send(outbound(TextMessage(text="hi")))

    assert str(code) in str(caught.value) and message in str(caught.value)
    assert caught.value.response["code"] == code


@pytest.mark.parametrize(
    ("http_status", "code", "message"),
    [
        (500, 20500, "Internal Server Error"),
        (503, 20503, "Service Unavailable"),
        (429, 20429, "Too Many Requests"),
        (400, 20429, "Too Many Requests"),  # the code alone says "later"
    ],
)
async def test_twilio_5xx_and_rate_limits_are_unavailable(
    fake: FakeTwilio, http: httpx.AsyncClient, http_status: int, code: int, message: str
) -> None:
    fake.fail_next(http_status, code, message)

    with pytest.raises(ProviderUnavailable) as caught:
        await channel(fake.base_url, http).send(outbound(TextMessage(text="hi")))

    assert caught.value.retryable
    assert not caught.value.maybe_delivered
    assert caught.value.response["code"] == code


async def test_fail_next_counts_down(fake: FakeTwilio, http: httpx.AsyncClient) -> None:
    fake.fail_next(500, 20500, "Internal Server Error", count=2)
    sms = channel(fake.base_url, http)

    for _ in range(2):
        with pytest.raises(ProviderUnavailable):
            await sms.send(outbound(TextMessage(text="hi")))
    await sms.send(outbound(TextMessage(text="hi")))

    assert len(fake.wait_for(1)) == 1


async def test_wrong_token_is_rejected_and_no_error_names_it(
    fake: FakeTwilio, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wrong-token-that-must-stay-secret"

    with caplog.at_level(logging.DEBUG), pytest.raises(ProviderRejected) as caught:
        await channel(fake.base_url, http, token=wrong).send(outbound(TextMessage(text="hi")))

    assert "20003" in str(caught.value)
    assert caught.value.response["code"] == 20003
    for text in (str(caught.value), repr(caught.value.response), caplog.text):
        assert wrong not in text


async def test_a_token_echoed_back_is_redacted(http: httpx.AsyncClient) -> None:
    with WebhookReceiver() as proxy:
        proxy.respond_with(Reply(502, body=f"upstream said {TOKEN}"))

        with pytest.raises(ProviderUnavailable) as caught:
            await channel(proxy.base_url, http).send(outbound(TextMessage(text="hi")))

    assert TOKEN not in str(caught.value)
    assert TOKEN not in repr(caught.value.response)
    assert "[redacted]" in str(caught.value)


async def test_2xx_without_a_sid_may_have_been_delivered(http: httpx.AsyncClient) -> None:
    with WebhookReceiver() as proxy:
        proxy.respond_with(Reply(200, body="ok"))

        with pytest.raises(ProviderUnavailable) as caught:
            await channel(proxy.base_url, http).send(outbound(TextMessage(text="hi")))

    assert caught.value.maybe_delivered


async def test_a_read_timeout_may_have_been_delivered(http: httpx.AsyncClient) -> None:
    with WebhookReceiver() as slow:
        slow.respond_with(Reply(201, body="{}", delay_seconds=1))
        sms = channel(slow.base_url, http, timeout_seconds=0.2)

        with pytest.raises(ProviderUnavailable, match="timed out") as caught:
            await sms.send(outbound(TextMessage(text="hi")))

    assert caught.value.maybe_delivered
    assert TOKEN not in str(caught.value)


async def test_connection_refused_was_not_delivered(http: httpx.AsyncClient) -> None:
    sms = channel(f"http://127.0.0.1:{free_port()}", http)

    with pytest.raises(ProviderUnavailable, match="unreachable") as caught:
        await sms.send(outbound(TextMessage(text="hi")))

    assert not caught.value.maybe_delivered


async def test_egress_policy_refusal_is_final(fake: FakeTwilio) -> None:
    async with tenant_http_client(EgressPolicy()) as public_only:
        with pytest.raises(ProviderRejected, match="refused: loopback"):
            await channel(fake.base_url, public_only).send(outbound(TextMessage(text="hi")))

    assert fake.sent == []


def test_channel_errors_are_channel_errors() -> None:
    assert issubclass(ProviderRejected, ChannelError)
    assert TwilioSmsChannel.honours_idempotency_key is False


# --- signatures ---------------------------------------------------------------------------


PARAMS = {"MessageSid": "SM" + "0" * 32, "MessageStatus": "delivered", "To": PHONE}
HOOK = "https://nudge.example.com/v1/webhooks/acme/sms"


def sign(url: str, params: dict[str, str], token: str = TOKEN) -> str:
    return str(RequestValidator(token).compute_signature(url, params))


def test_a_good_signature_passes() -> None:
    verify_signature(TOKEN, HOOK, PARAMS, sign(HOOK, PARAMS))


def test_a_tampered_parameter_fails() -> None:
    signature = sign(HOOK, PARAMS)

    with pytest.raises(BadSignature):
        verify_signature(TOKEN, HOOK, {**PARAMS, "MessageStatus": "read"}, signature)


def test_another_url_fails() -> None:
    signature = sign(HOOK, PARAMS)

    with pytest.raises(BadSignature):
        verify_signature(TOKEN, HOOK.replace("acme", "other"), PARAMS, signature)


def test_another_token_fails() -> None:
    with pytest.raises(BadSignature):
        verify_signature(TOKEN, HOOK, PARAMS, sign(HOOK, PARAMS, token="other"))


@pytest.mark.parametrize("header", [None, ""])
def test_a_missing_signature_fails(header: str | None) -> None:
    with pytest.raises(BadSignature, match="no X-Twilio-Signature"):
        verify_signature(TOKEN, HOOK, PARAMS, header)


def test_twilios_documented_example_passes() -> None:
    # The worked example of Twilio's "Validating requests" docs (also twilio-python's
    # tests/unit/test_request_validator.py): auth token 12345.
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+14158675309",
        "Digits": "1234",
        "From": "+14158675309",
        "To": "+18005551212",
    }
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"

    verify_signature("12345", url, params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    with pytest.raises(BadSignature):
        verify_signature("12345", url, {**params, "Digits": "1235"}, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")


# --- the fake's callbacks, read by parse_webhook ------------------------------------------


def verified(request: ReceivedRequest, url: str) -> dict[str, str]:
    params = form(request)
    verify_signature(TOKEN, url, params, request.headers.get("x-twilio-signature"))
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    return params


async def test_auto_receipts_arrive_signed_and_in_order(
    fake: FakeTwilio, http: httpx.AsyncClient, webhook_receiver: WebhookReceiver
) -> None:
    fake.auto_receipts = ("sent", "delivered", "read")

    receipt = await channel(fake.base_url, http).send(
        outbound(TextMessage(text="hi"), callback=webhook_receiver.url)
    )

    requests = await received(webhook_receiver, 3)
    params = [verified(request, webhook_receiver.url) for request in requests]
    assert [p["MessageStatus"] for p in params] == ["sent", "delivered", "read"]
    assert params[0] == {
        "AccountSid": DEFAULT_ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "From": NUMBER,
        "MessageSid": receipt.provider_message_id,
        "MessageStatus": "sent",
        "SmsSid": receipt.provider_message_id,
        "SmsStatus": "sent",
        "To": PHONE,
    }
    updates = [parse_webhook(p).statuses[0] for p in params]
    assert [u.status for u in updates] == ["sent", "delivered", "read"]
    assert {u.provider_message_id for u in updates} == {receipt.provider_message_id}


async def test_send_status_posts_an_undelivered_receipt_with_its_error(
    fake: FakeTwilio, http: httpx.AsyncClient, webhook_receiver: WebhookReceiver
) -> None:
    receipt = await channel(fake.base_url, http, messaging_service_sid=SERVICE).send(
        outbound(TextMessage(text="hi"), callback=webhook_receiver.url)
    )
    assert receipt.provider_message_id is not None

    answer = fake.send_status(receipt.provider_message_id, "undelivered", error_code=30005)

    assert answer.status_code == 200  # what the receiver (standing in for Nudge) answered
    [request] = await received(webhook_receiver, 1)
    params = verified(request, webhook_receiver.url)
    assert params["ErrorCode"] == "30005"
    assert params["MessagingServiceSid"] == SERVICE
    [update] = parse_webhook(params).statuses
    assert update == StatusUpdate(
        provider_message_id=receipt.provider_message_id,
        status="undelivered",
        at=update.at,
        error_code="30005",
        error="Unknown destination handset",
    )
    assert update.at.tzinfo is not None


async def test_send_sms_posts_a_signed_incoming_message_with_media(
    fake: FakeTwilio, webhook_receiver: WebhookReceiver
) -> None:
    fake.inbound_url = webhook_receiver.url
    media = ("https://api.twilio.com/media/ME1", "https://api.twilio.com/media/ME2")

    answer, sid = fake.send_sms(PHONE, "Paid, see the receipt", media_urls=media)

    assert answer.status_code == 200
    [request] = await received(webhook_receiver, 1)
    params = verified(request, webhook_receiver.url)
    assert params["SmsStatus"] == "received"
    assert params["To"] == NUMBER
    [message] = parse_webhook(params).messages
    assert message == InboundMessage(
        provider_message_id=sid,
        phone=PHONE,
        at=message.at,
        text="Paid, see the receipt",
        kind="image",
        media=list(media),
    )


async def test_send_sms_over_whatsapp_strips_the_prefix(
    fake: FakeTwilio, webhook_receiver: WebhookReceiver
) -> None:
    fake.inbound_url = webhook_receiver.url

    _, sid = fake.send_sms(f"whatsapp:{PHONE}", "Hola", profile_name="Ada")

    [request] = await received(webhook_receiver, 1)
    [message] = parse_webhook(verified(request, webhook_receiver.url)).messages
    assert message.provider_message_id == sid
    assert message.phone == PHONE
    assert message.profile_name == "Ada"
    assert message.whatsapp_id == PHONE.removeprefix("+")
    assert message.media == []


def test_send_sms_needs_an_inbound_url(fake: FakeTwilio) -> None:
    with pytest.raises(RuntimeError, match="inbound_url"):
        fake.send_sms(PHONE, "hi")


# --- parse_webhook ------------------------------------------------------------------------


SID = "SM" + "f" * 32


@pytest.mark.parametrize(
    ("twilio_status", "status"),
    [
        ("accepted", "queued"),
        ("scheduled", "queued"),
        ("queued", "queued"),
        ("sending", "sent"),
        ("sent", "sent"),
        ("delivered", "delivered"),
        ("read", "read"),
        ("undelivered", "undelivered"),
        ("failed", "failed"),
        ("canceled", "failed"),
    ],
)
def test_each_twilio_status_maps_to_a_receipt(twilio_status: str, status: str) -> None:
    params = {"MessageSid": SID, "MessageStatus": twilio_status, "SmsStatus": twilio_status}

    [update] = parse_webhook(params).statuses

    assert update.provider_message_id == SID
    assert update.status == status
    assert update.error_code is None


def test_a_canceled_message_says_so() -> None:
    [update] = parse_webhook({"MessageSid": SID, "MessageStatus": "canceled"}).statuses

    assert update.error == "The message was canceled before it was sent"


def test_an_unknown_error_code_is_kept_without_a_reason() -> None:
    params = {"MessageSid": SID, "MessageStatus": "failed", "ErrorCode": "12345"}

    [update] = parse_webhook(params).statuses

    assert (update.error_code, update.error) == ("12345", None)


def test_a_whatsapp_quick_reply_keeps_its_payload() -> None:
    params = {
        "MessageSid": SID,
        "SmsStatus": "received",
        "From": "whatsapp:+34600111222",
        "To": "whatsapp:+15005550006",
        "Body": "Yes, pay",
        "NumMedia": "0",
        "ProfileName": "Ada",
        "WaId": "34600111222",
        "MessageType": "button",
        "ButtonText": "Yes, pay",
        "ButtonPayload": "pay-INC001",
    }

    [message] = parse_webhook(params).messages

    assert message.phone == "+34600111222"
    assert (message.payload, message.kind) == ("pay-INC001", "button")
    assert (message.profile_name, message.whatsapp_id) == ("Ada", "34600111222")


def test_a_plain_sms_is_text() -> None:
    params = {"MessageSid": SID, "From": PHONE, "To": NUMBER, "Body": "hello"}

    [message] = parse_webhook(params).messages

    assert (message.text, message.kind, message.media, message.payload) == (
        "hello",
        "text",
        [],
        None,
    )


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({}, "MessageStatus"),
        ({"MessageStatus": "delivered"}, "MessageSid"),
        ({"MessageSid": SID, "MessageStatus": "exploded"}, "exploded"),
        ({"MessageSid": SID, "Body": "hi"}, "From"),
        ({"Body": "hi", "From": PHONE}, "MessageSid"),
        ({"MessageSid": SID, "Body": "hi", "From": "Nudge"}, "E.164"),
        (
            {"MessageSid": SID, "From": PHONE, "NumMedia": "2", "MediaUrl0": "https://m/0"},
            "MediaUrl1",
        ),
        ({"MessageSid": SID, "From": PHONE, "NumMedia": "many"}, "NumMedia"),
    ],
)
def test_a_malformed_body_names_what_is_wrong(params: dict[str, str], named: str) -> None:
    with pytest.raises(BadWebhook, match=named):
        parse_webhook(params)


def test_twiml_empty_sends_no_reply() -> None:
    assert twiml_empty() == '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
