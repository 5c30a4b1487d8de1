"""Channel adapters against real local servers: a webhook receiver and an SMTP sink."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from nudge.messaging.channels.base import (
    Outbound,
    ProviderRejected,
    ProviderUnavailable,
    Recipient,
    RecipientUnreachable,
)
from nudge.messaging.channels.email import EmailChannel, build_email, message_id, subject
from nudge.messaging.channels.log import LogChannel
from nudge.messaging.channels.registry import build_sender
from nudge.messaging.channels.webhook import WebhookChannel, encode_body
from nudge.models.channels import EmailConfig, WebhookConfig
from nudge.models.messages import Button, Card, CardMessage, Image, ImageMessage, TextMessage
from nudge.security import sign, signature_is_valid
from tests.utils.egress import LOOPBACK, loopback_http
from tests.utils.receivers import (
    ReceivedRequest,
    Reply,
    SmtpSink,
    WebhookReceiver,
    free_port,
    make_self_signed_cert,
    server_tls_context,
)

ADA = Recipient(external_id="u1", name="Ada Lovelace", email="ada@example.com")
FOLLOWUP_SOURCE = {
    "type": "followup",
    "followup_id": "late-invoices",
    "reconciliation_id": "INC001",
    "attempt": 1,
    "attempts": 3,
}
TEXT = TextMessage(text="Invoice INC001 is overdue\nPlease pay today.")
CARD = CardMessage(
    card=Card(
        title="Invoice INC001 is overdue",
        text="Please pay <today>.\n\nThanks!",
        image_url="https://example.com/logo.png",
        buttons=[
            Button(label="Pay now", action="pay", url="https://nudge.example.com/v1/actions/t1"),
            Button(label="Later", action="snooze"),
        ],
    )
)


def outbound(
    message: TextMessage | CardMessage | ImageMessage | None = None,
    recipient: Recipient = ADA,
    key: str = "followup/acme/late-invoices/record/INC001:1:u1:ops",
) -> Outbound:
    return Outbound(
        tenant="acme",
        channel="ops",
        idempotency_key=key,
        recipient=recipient,
        message=message or TEXT,
        source=FOLLOWUP_SOURCE,
    )


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with loopback_http() as client:
        yield client


@pytest.fixture
def starttls_smtp_sink(tmp_path: Path) -> Iterator[SmtpSink]:
    """An SMTP sink that requires STARTTLS, with a self-signed certificate."""
    context = server_tls_context(*make_self_signed_cert(tmp_path))
    with SmtpSink(tls_context=context, require_starttls=True) as sink:
        yield sink


def assert_signed(request: ReceivedRequest, secret: str) -> None:
    """Check X-Nudge-Signature as a receiver would, written apart from Nudge's own code."""
    fields = dict(part.split("=", 1) for part in request.headers["x-nudge-signature"].split(","))
    assert abs(time.time() - int(fields["t"])) < 60
    signed = fields["t"].encode() + b"." + request.body
    assert fields["v1"] == hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def webhook(url: str, http: httpx.AsyncClient, **config: Any) -> WebhookChannel:
    return WebhookChannel(WebhookConfig.model_validate({"url": url, **config}), http)


def email_config(port: int, **config: Any) -> EmailConfig:
    settings = {
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "from_address": "noreply@nudge.example.com",
        "from_name": "Nudge",
        "timeout_seconds": 5,
    }
    return EmailConfig.model_validate({**settings, **config})


def email(port: int, **config: Any) -> EmailChannel:
    return EmailChannel(email_config(port, **config), LOOPBACK)


def parts(message: EmailMessage) -> tuple[str, str]:
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


# --- webhook ----------------------------------------------------------------------------------


async def test_webhook_posts_signed_body_and_headers_as_in_api_md(
    webhook_receiver: WebhookReceiver, http: httpx.AsyncClient
) -> None:
    webhook_receiver.respond_with(Reply(200, body='{"received": true}'))
    channel = webhook(webhook_receiver.url, http, secret="s3cret")

    receipt = await channel.send(outbound(CARD))

    [request] = webhook_receiver.requests
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/json"
    assert (
        request.headers["idempotency-key"] == "followup/acme/late-invoices/record/INC001:1:u1:ops"
    )
    assert_signed(request, "s3cret")
    assert request.json == {
        "tenant": "acme",
        "idempotency_key": "followup/acme/late-invoices/record/INC001:1:u1:ops",
        "channel": "ops",
        "recipient": {"external_id": "u1", "email": "ada@example.com", "name": "Ada Lovelace"},
        "message": {
            "kind": "card",
            "card": {
                "title": "Invoice INC001 is overdue",
                "text": "Please pay <today>.\n\nThanks!",
                "image_url": "https://example.com/logo.png",
                "buttons": [
                    {
                        "label": "Pay now",
                        "action": "pay",
                        "url": "https://nudge.example.com/v1/actions/t1",
                    },
                    {"label": "Later", "action": "snooze"},
                ],
            },
        },
        "source": FOLLOWUP_SOURCE,
    }
    assert receipt.response == {"status_code": 200, "body": '{"received": true}'}


async def test_webhook_without_secret_sends_no_signature_header(
    webhook_receiver: WebhookReceiver, http: httpx.AsyncClient
) -> None:
    await webhook(webhook_receiver.url, http).send(outbound())

    [request] = webhook_receiver.requests
    assert "x-nudge-signature" not in request.headers
    assert request.json["message"] == {"kind": "text", "text": TEXT.text}


async def test_webhook_retry_sends_same_key_and_same_bytes(
    webhook_receiver: WebhookReceiver, http: httpx.AsyncClient
) -> None:
    webhook_receiver.respond_with(503, 200)
    channel = webhook(webhook_receiver.url, http, secret="s3cret")

    with pytest.raises(ProviderUnavailable):
        await channel.send(outbound())
    await channel.send(outbound())

    first, second = webhook_receiver.requests
    assert first.body == second.body
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]


async def test_webhook_4xx_is_rejected_with_the_providers_answer(
    webhook_receiver: WebhookReceiver, http: httpx.AsyncClient
) -> None:
    webhook_receiver.respond_with(Reply(422, body='{"error": "unknown user u1"}'))

    with pytest.raises(ProviderRejected) as caught:
        await webhook(webhook_receiver.url, http).send(outbound())

    assert "422" in str(caught.value)
    assert "unknown user u1" in str(caught.value)
    assert caught.value.response == {"status_code": 422, "body": '{"error": "unknown user u1"}'}
    assert caught.value.retryable is False


@pytest.mark.parametrize("status", [500, 502, 503, 408, 429])
async def test_webhook_5xx_408_and_429_are_unavailable(
    webhook_receiver: WebhookReceiver, http: httpx.AsyncClient, status: int
) -> None:
    webhook_receiver.respond_with(Reply(status, body="busy", headers={"Retry-After": "30"}))

    with pytest.raises(ProviderUnavailable) as caught:
        await webhook(webhook_receiver.url, http).send(outbound())

    assert caught.value.retryable is True
    assert caught.value.response == {"status_code": status, "body": "busy", "retry_after": "30"}


async def test_webhook_redirect_is_not_followed_and_is_rejected(
    webhook_receiver: WebhookReceiver, http: httpx.AsyncClient
) -> None:
    webhook_receiver.respond_with(Reply(307, headers={"Location": "http://127.0.0.1:1/elsewhere"}))

    with pytest.raises(ProviderRejected):
        await webhook(webhook_receiver.url, http).send(outbound())

    assert len(webhook_receiver.requests) == 1


async def test_webhook_connection_refused_is_unavailable(http: httpx.AsyncClient) -> None:
    with pytest.raises(ProviderUnavailable):
        await webhook(f"http://127.0.0.1:{free_port()}/hook", http).send(outbound())


async def test_webhook_timeout_is_unavailable(
    webhook_receiver: WebhookReceiver, http: httpx.AsyncClient
) -> None:
    webhook_receiver.respond_with(Reply(200, delay_seconds=1))

    with pytest.raises(ProviderUnavailable, match="timed out"):
        await webhook(webhook_receiver.url, http, timeout_seconds=0.2).send(outbound())


async def test_webhook_response_body_kept_in_receipt_is_truncated(
    webhook_receiver: WebhookReceiver, http: httpx.AsyncClient
) -> None:
    webhook_receiver.respond_with(Reply(200, body="x" * 5000))

    receipt = await webhook(webhook_receiver.url, http).send(outbound())

    assert receipt.response["body"] == "x" * 2000


# --- email ------------------------------------------------------------------------------------


async def test_email_reaches_the_server_with_text_and_html_parts(smtp_sink: SmtpSink) -> None:
    receipt = await email(smtp_sink.port).send(outbound())

    [mail] = smtp_sink.messages
    assert mail.mail_from == "noreply@nudge.example.com"
    assert mail.rcpt_tos == ["ada@example.com"]
    message = mail.message
    assert message["From"] == "Nudge <noreply@nudge.example.com>"
    assert message["To"] == "Ada Lovelace <ada@example.com>"
    assert message["Subject"] == "Invoice INC001 is overdue"
    assert message.get_content_type() == "multipart/alternative"
    text, html = parts(message)
    assert text.strip() == "Invoice INC001 is overdue\nPlease pay today."
    assert "<p>Invoice INC001 is overdue<br>\nPlease pay today.</p>" in html
    key = "followup/acme/late-invoices/record/INC001:1:u1:ops"
    assert message["X-Nudge-Idempotency-Key"] == key
    assert (
        message["Message-ID"] == f"<{hashlib.sha256(key.encode()).hexdigest()}@nudge.example.com>"
    )
    assert receipt.response["message_id"] == message["Message-ID"]
    assert receipt.response["smtp_code"] == 250
    assert "queued as NUDGETEST" in receipt.response["smtp_answer"]


async def test_email_card_has_title_subject_and_buttons_as_links_in_both_parts(
    smtp_sink: SmtpSink,
) -> None:
    await email(smtp_sink.port).send(outbound(CARD))

    message = smtp_sink.messages[0].message
    assert message["Subject"] == "Invoice INC001 is overdue"
    text, html = parts(message)
    assert "Pay now: https://nudge.example.com/v1/actions/t1" in text
    assert '<a href="https://nudge.example.com/v1/actions/t1">Pay now</a>' in html
    assert "<h2>Invoice INC001 is overdue</h2>" in html
    assert "<p>Please pay &lt;today&gt;.</p>" in html
    assert '<img src="https://example.com/logo.png"' in html
    assert "<p>Later</p>" in html


async def test_email_image_message_shows_the_image(smtp_sink: SmtpSink) -> None:
    image = ImageMessage(image=Image(url="https://example.com/chart.png", caption="Weekly chart"))

    await email(smtp_sink.port).send(outbound(image))

    message = smtp_sink.messages[0].message
    assert message["Subject"] == "Weekly chart"
    assert '<img src="https://example.com/chart.png" alt="Weekly chart">' in parts(message)[1]


def test_email_subject_is_first_line_of_text_cut_to_78_characters() -> None:
    long_line = "word " * 30

    assert subject(TextMessage(text=f"\n{long_line}\nsecond line")) == long_line[:77] + "…"
    assert len(subject(TextMessage(text=long_line))) == 78
    assert subject(ImageMessage(image=Image(url="https://example.com/a.png"))) == "Image"
    assert subject(CardMessage(card=Card(title="Line one\nline two"))) == "Line one line two"


def test_email_html_escapes_text_and_links_only_web_addresses() -> None:
    card = CardMessage(
        card=Card(
            title="<script>x</script>",
            buttons=[Button(label="Open", action="open", url="javascript:alert(1)")],
        )
    )

    html = parts(build_email(outbound(card), email_config(25)))[1]

    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "javascript:" not in html


def test_email_message_id_is_the_same_for_a_resend_and_differs_per_key() -> None:
    first = message_id("k1", "noreply@nudge.example.com")

    assert message_id("k1", "noreply@nudge.example.com") == first
    assert message_id("k2", "noreply@nudge.example.com") != first


async def test_email_non_ascii_names_survive(smtp_sink: SmtpSink) -> None:
    zoe = Recipient(external_id="u2", name="Zoë Ağa", email="zoe@example.com")

    await email(smtp_sink.port, from_name="Relance Équipe").send(outbound(recipient=zoe))

    message = smtp_sink.messages[0].message
    assert message["To"] == "Zoë Ağa <zoe@example.com>"
    assert message["From"] == "Relance Équipe <noreply@nudge.example.com>"


async def test_email_over_starttls_with_self_signed_cert_when_verification_is_off(
    starttls_smtp_sink: SmtpSink,
) -> None:
    channel = email(starttls_smtp_sink.port, security="starttls", verify_certificate=False)

    await channel.send(outbound())

    assert len(starttls_smtp_sink.messages) == 1


async def test_email_starttls_refuses_self_signed_cert_when_verification_is_on(
    starttls_smtp_sink: SmtpSink,
) -> None:
    channel = email(starttls_smtp_sink.port, security="starttls", verify_certificate=True)

    with pytest.raises(ProviderUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        await channel.send(outbound())

    assert starttls_smtp_sink.messages == []


async def test_email_starttls_configured_but_not_offered_is_rejected(smtp_sink: SmtpSink) -> None:
    with pytest.raises(ProviderRejected, match="STARTTLS"):
        await email(smtp_sink.port, security="starttls").send(outbound())

    assert smtp_sink.messages == []


async def test_email_over_implicit_tls(tmp_path: Path) -> None:
    context = server_tls_context(*make_self_signed_cert(tmp_path))
    with SmtpSink(implicit_tls_context=context) as sink:
        await email(sink.port, security="tls", verify_certificate=False).send(outbound())

        assert len(sink.messages) == 1


async def test_email_logs_in_with_the_password_from_credentials(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    context = server_tls_context(*make_self_signed_cert(tmp_path))
    with SmtpSink(tls_context=context, require_starttls=True, login=("nudge", "pw")) as sink:
        settings = {
            "host": "127.0.0.1",
            "port": sink.port,
            "verify_certificate": False,
            "username": "nudge",
            "from_address": "noreply@nudge.example.com",
        }
        channel = build_sender("email", settings, {"password": "pw"}, http, LOOPBACK)

        await channel.send(outbound())

        assert len(sink.messages) == 1


async def test_email_wrong_password_is_rejected(tmp_path: Path) -> None:
    context = server_tls_context(*make_self_signed_cert(tmp_path))
    with SmtpSink(tls_context=context, require_starttls=True, login=("nudge", "pw")) as sink:
        channel = email(
            sink.port,
            security="starttls",
            verify_certificate=False,
            username="nudge",
            password="wrong",
        )

        with pytest.raises(ProviderRejected, match="535"):
            await channel.send(outbound())


async def test_email_contact_without_email_is_unreachable(smtp_sink: SmtpSink) -> None:
    no_email = Recipient(external_id="u3", name="Phone Only", phone="+15550100")

    with pytest.raises(RecipientUnreachable, match="u3"):
        await email(smtp_sink.port).send(outbound(recipient=no_email))

    assert smtp_sink.messages == []


async def test_email_recipient_refused_with_550_is_rejected(smtp_sink: SmtpSink) -> None:
    smtp_sink.refuse("ada@example.com", "550 5.1.1 No such user")

    with pytest.raises(ProviderRejected, match="No such user") as caught:
        await email(smtp_sink.port).send(outbound())

    assert caught.value.response == {"smtp_code": 550, "smtp_answer": "5.1.1 No such user"}
    assert smtp_sink.messages == []


async def test_email_recipient_refused_with_450_is_unavailable(smtp_sink: SmtpSink) -> None:
    smtp_sink.refuse("ada@example.com", "450 4.2.0 Greylisted, try again later")

    with pytest.raises(ProviderUnavailable, match="Greylisted"):
        await email(smtp_sink.port).send(outbound())


async def test_email_server_not_listening_is_unavailable() -> None:
    with pytest.raises(ProviderUnavailable):
        await email(free_port()).send(outbound())


# --- log --------------------------------------------------------------------------------------


async def test_log_channel_logs_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nudge.channels.log")

    receipt = await LogChannel().send(outbound())

    [record] = caplog.records
    assert record.name == "nudge.channels.log"
    assert record.levelno == logging.INFO
    line = record.getMessage()
    assert "\n" not in line
    for part in ("acme", "ops", "u1", "INC001:1:u1:ops", "Please pay today."):
        assert part in line
    assert receipt.response == {"logged": True}


# --- registry ---------------------------------------------------------------------------------


async def test_registry_builds_each_channel_type(http: httpx.AsyncClient) -> None:
    assert isinstance(build_sender("log", {}, {}, http, LOOPBACK), LogChannel)
    webhook_config = {"url": "https://hooks.example.com/x"}
    assert isinstance(build_sender("webhook", webhook_config, {}, http, LOOPBACK), WebhookChannel)
    smtp_config = {"host": "smtp.example.com", "from_address": "a@example.com"}
    assert isinstance(build_sender("email", smtp_config, {}, http, LOOPBACK), EmailChannel)


async def test_registry_passes_credentials_to_the_channel(
    webhook_receiver: WebhookReceiver, http: httpx.AsyncClient
) -> None:
    sender = build_sender(
        "webhook", {"url": webhook_receiver.url}, {"secret": "s3cret"}, http, LOOPBACK
    )

    await sender.send(outbound())

    [request] = webhook_receiver.requests
    assert_signed(request, "s3cret")


@pytest.mark.parametrize(
    ("channel_type", "config"),
    [
        ("carrier-pigeon", {}),
        ("webhook", {"url": "not a url"}),
        ("email", {"host": "smtp.example.com"}),
        ("log", {"unexpected": True}),
    ],
)
async def test_registry_refuses_unknown_type_and_invalid_config(
    http: httpx.AsyncClient, channel_type: str, config: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):
        build_sender(channel_type, config, {}, http, LOOPBACK)


def test_webhook_body_is_compact_utf8_json() -> None:
    body = encode_body(outbound(TextMessage(text="Relance: ça presse")))

    assert "ça presse".encode() in body
    assert json.loads(body)["message"]["text"] == "Relance: ça presse"


def test_a_receiver_refuses_old_or_altered_webhook_bodies() -> None:
    body = b'{"tenant":"acme"}'
    header = sign("s3cret", body, at=1_000_000)
    assert signature_is_valid("s3cret", body, header, now=1_000_100)
    assert not signature_is_valid("s3cret", body, header, now=1_000_000 + 301)  # replayed late
    assert not signature_is_valid("s3cret", body + b" ", header, now=1_000_100)
    assert not signature_is_valid("other", body, header, now=1_000_100)
    assert not signature_is_valid("s3cret", body, "sha256=abc", now=1_000_100)
