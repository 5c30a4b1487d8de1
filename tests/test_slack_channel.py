"""The Slack channel against a real HTTP server on 127.0.0.1 standing in for Slack."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from nudge.messaging.channels.base import (
    Outbound,
    ProviderRejected,
    ProviderUnavailable,
    Recipient,
)
from nudge.messaging.channels.registry import build_sender
from nudge.messaging.channels.slack import SlackChannel, mrkdwn_chunks
from nudge.models.channels import SlackChannelPut, SlackConfig, split_credentials
from nudge.models.messages import Button, Card, CardMessage, Image, ImageMessage, TextMessage
from nudge.models.tables import Channel
from tests.conftest import TenantKeys, problems
from tests.utils.egress import LOOPBACK, loopback_http
from tests.utils.receivers import Reply, WebhookReceiver, free_port

# The part of a Slack webhook URL that makes it a credential.
SECRET_PATH = "/services/T0000/B0000/XXXXsecretXXXX"
PAY_URL = "https://nudge.example.com/v1/actions/t1"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with loopback_http() as client:
        yield client


def slack_url(receiver: WebhookReceiver) -> str:
    return receiver.url + SECRET_PATH


def slack(url: str, http: httpx.AsyncClient, **config: Any) -> SlackChannel:
    return SlackChannel(SlackConfig.model_validate({"webhook_url": url, **config}), http)


def outbound(message: TextMessage | CardMessage | ImageMessage) -> Outbound:
    return Outbound(
        tenant="acme",
        channel="team-slack",
        idempotency_key="followup/acme/late-invoices/record/INC001:1:u1:team-slack",
        recipient=Recipient(external_id="u1", name="Ada Lovelace"),
        message=message,
    )


def card(*buttons: Button, image_url: str | None = "https://example.com/logo.png") -> CardMessage:
    return CardMessage(
        card=Card(
            title="Invoice INC001 is overdue",
            text="Please pay <today> & thanks!",
            image_url=image_url,
            buttons=list(buttons),
        )
    )


# --- sending ----------------------------------------------------------------------------------


async def test_text_arrives_as_escaped_mrkdwn_with_a_fallback(
    webhook_receiver: WebhookReceiver, http: httpx.AsyncClient
) -> None:
    message = TextMessage(text="Invoice <INC001> is overdue & unpaid\nPay today.")

    receipt = await slack(slack_url(webhook_receiver), http).send(outbound(message))

    [request] = webhook_receiver.requests
    assert request.method == "POST"
    assert request.path == "/hook" + SECRET_PATH
    assert request.headers["content-type"].startswith("application/json")
    assert request.headers["idempotency-key"] == outbound(message).idempotency_key
    escaped = "Invoice &lt;INC001&gt; is overdue &amp; unpaid\nPay today."
    assert request.json == {
        "text": escaped,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": escaped}}],
    }
    assert receipt.response == {"status_code": 200, "body": "ok"}


async def test_username_and_icon_are_sent_when_configured(
    webhook_receiver: WebhookReceiver, http: httpx.AsyncClient
) -> None:
    channel = slack(slack_url(webhook_receiver), http, username="Nudge", icon_emoji=":bell:")

    await channel.send(outbound(TextMessage(text="hi")))

    [request] = webhook_receiver.requests
    assert request.json["username"] == "Nudge"
    assert request.json["icon_emoji"] == ":bell:"


async def test_card_arrives_as_header_section_image_and_link_buttons(
    webhook_receiver: WebhookReceiver, http: httpx.AsyncClient
) -> None:
    message = card(
        Button(label="Pay now", action="pay", url=PAY_URL),
        Button(label="Snooze a week", action="snooze", url="https://nudge.example.com/s"),
    )

    await slack(slack_url(webhook_receiver), http).send(outbound(message))

    [request] = webhook_receiver.requests
    header, section, image, actions = request.json["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Invoice INC001 is overdue", "emoji": True},
    }
    assert section == {
        "type": "section",
        "text": {"type": "mrkdwn", "text": "Please pay &lt;today&gt; &amp; thanks!"},
    }
    assert image == {
        "type": "image",
        "image_url": "https://example.com/logo.png",
        "alt_text": "Invoice INC001 is overdue",
    }
    assert actions["type"] == "actions"
    assert [
        (b["type"], b["text"]["text"], b["url"], b["action_id"]) for b in actions["elements"]
    ] == [
        ("button", "Pay now", PAY_URL, "pay"),
        ("button", "Snooze a week", "https://nudge.example.com/s", "snooze"),
    ]
    assert all(b["text"]["type"] == "plain_text" for b in actions["elements"])
    assert request.json["text"].startswith("Invoice INC001 is overdue\nPlease pay &lt;today&gt;")
    assert f"Pay now: {PAY_URL}" in request.json["text"]


async def test_card_buttons_without_url_degrade_to_a_context_line(
    webhook_receiver: WebhookReceiver, http: httpx.AsyncClient
) -> None:
    message = card(
        Button(label="Pay now", action="pay", url=PAY_URL),
        Button(label="Later", action="snooze"),
        Button(label="Ask <finance>", action="ask"),
        image_url=None,
    )

    await slack(slack_url(webhook_receiver), http).send(outbound(message))

    [request] = webhook_receiver.requests
    kinds = [block["type"] for block in request.json["blocks"]]
    assert kinds == ["header", "section", "actions", "context"]
    actions, context = request.json["blocks"][2:]
    assert [b["url"] for b in actions["elements"]] == [PAY_URL]
    assert context["elements"] == [{"type": "mrkdwn", "text": "Later · Ask &lt;finance&gt;"}]


async def test_card_with_only_unlinked_buttons_has_no_actions_block(
    webhook_receiver: WebhookReceiver, http: httpx.AsyncClient
) -> None:
    message = card(Button(label="Later", action="snooze"), image_url=None)

    await slack(slack_url(webhook_receiver), http).send(outbound(message))

    [request] = webhook_receiver.requests
    assert [block["type"] for block in request.json["blocks"]] == ["header", "section", "context"]


async def test_card_respects_block_kit_limits(
    webhook_receiver: WebhookReceiver, http: httpx.AsyncClient
) -> None:
    message = CardMessage(
        card=Card(
            title="T" * 400,
            text="word " * 1000,
            buttons=[
                Button(label="L" * 80, action="pay", url=PAY_URL),
                Button(label="Again", action="pay", url=PAY_URL),
            ],
        )
    )

    await slack(slack_url(webhook_receiver), http).send(outbound(message))

    [request] = webhook_receiver.requests
    blocks = request.json["blocks"]
    header = blocks[0]["text"]["text"]
    assert len(header) == 150 and header.endswith("…")
    sections = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    assert len(sections) == 2 and all(len(text) <= 3000 for text in sections)
    assert " ".join(sections) == " ".join(["word"] * 1000)
    buttons = blocks[-1]["elements"]
    assert len(buttons[0]["text"]["text"]) == 75
    assert [b["action_id"] for b in buttons] == ["pay", "pay-2"]


def test_mrkdwn_chunks_never_split_an_escape() -> None:
    assert mrkdwn_chunks("<" * 3, 7) == ["&lt;"] * 3
    assert mrkdwn_chunks("a<b c&d", 7) == ["a&lt;b", "c&amp;d"]
    assert mrkdwn_chunks("   \n ", 10) == []


async def test_image_arrives_as_image_block_with_caption(
    webhook_receiver: WebhookReceiver, http: httpx.AsyncClient
) -> None:
    message = ImageMessage(image=Image(url="https://example.com/chart.png", caption="Q3 <sales>"))

    await slack(slack_url(webhook_receiver), http).send(outbound(message))

    [request] = webhook_receiver.requests
    assert request.json["blocks"] == [
        {
            "type": "image",
            "image_url": "https://example.com/chart.png",
            "alt_text": "Q3 <sales>",
            "title": {"type": "plain_text", "text": "Q3 <sales>", "emoji": True},
        }
    ]
    assert request.json["text"] == "Q3 &lt;sales&gt;\nhttps://example.com/chart.png"


async def test_image_without_caption_still_has_alt_text(
    webhook_receiver: WebhookReceiver, http: httpx.AsyncClient
) -> None:
    message = ImageMessage(image=Image(url="https://example.com/chart.png"))

    await slack(slack_url(webhook_receiver), http).send(outbound(message))

    [block] = webhook_receiver.requests[0].json["blocks"]
    assert block == {
        "type": "image",
        "image_url": "https://example.com/chart.png",
        "alt_text": "Image",
    }


# --- Slack's answers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "answer"),
    [(400, "invalid_blocks"), (403, "action_prohibited"), (404, "no_service")],
)
async def test_4xx_is_rejected_with_slacks_answer(
    webhook_receiver: WebhookReceiver, http: httpx.AsyncClient, status: int, answer: str
) -> None:
    webhook_receiver.respond_with(Reply(status, body=answer))

    with pytest.raises(ProviderRejected) as caught:
        await slack(slack_url(webhook_receiver), http).send(outbound(TextMessage(text="hi")))

    assert caught.value.response == {"status_code": status, "body": answer}
    assert answer in str(caught.value)
    assert not caught.value.retryable
    assert SECRET_PATH not in str(caught.value)


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_429_and_5xx_are_unavailable(
    webhook_receiver: WebhookReceiver, http: httpx.AsyncClient, status: int
) -> None:
    webhook_receiver.respond_with(Reply(status, body="busy", headers={"Retry-After": "30"}))

    with pytest.raises(ProviderUnavailable) as caught:
        await slack(slack_url(webhook_receiver), http).send(outbound(TextMessage(text="hi")))

    assert caught.value.retryable
    assert caught.value.response == {"status_code": status, "body": "busy", "retry_after": "30"}


async def test_timeout_is_unavailable(
    webhook_receiver: WebhookReceiver, http: httpx.AsyncClient
) -> None:
    webhook_receiver.respond_with(Reply(200, delay_seconds=1))
    channel = slack(slack_url(webhook_receiver), http, timeout_seconds=0.2)

    with pytest.raises(ProviderUnavailable, match="timed out"):
        await channel.send(outbound(TextMessage(text="hi")))


async def test_connection_refused_is_unavailable_without_naming_the_url(
    http: httpx.AsyncClient,
) -> None:
    url = f"http://127.0.0.1:{free_port()}{SECRET_PATH}"

    with pytest.raises(ProviderUnavailable) as caught:
        await slack(url, http).send(outbound(TextMessage(text="hi")))

    assert SECRET_PATH not in str(caught.value)


async def test_redirects_are_not_followed(
    webhook_receiver: WebhookReceiver, http: httpx.AsyncClient
) -> None:
    webhook_receiver.respond_with(Reply(302, headers={"Location": webhook_receiver.url + "/x"}))

    with pytest.raises(ProviderRejected):
        await slack(slack_url(webhook_receiver), http).send(outbound(TextMessage(text="hi")))

    assert len(webhook_receiver.requests) == 1


async def test_httpx_request_log_does_not_show_the_webhook_url(
    webhook_receiver: WebhookReceiver, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="httpx"):
        await slack(slack_url(webhook_receiver), http).send(outbound(TextMessage(text="hi")))
        await http.get(webhook_receiver.url + "/other")  # not a Slack send: logged as is

    assert "HTTP Request: POST" in caplog.text
    assert SECRET_PATH not in caplog.text
    assert "/hook/other" in caplog.text


# --- config, credentials and the registry -----------------------------------------------------


async def test_registry_takes_the_webhook_url_from_credentials(
    webhook_receiver: WebhookReceiver, http: httpx.AsyncClient
) -> None:
    sender = build_sender(
        "slack",
        {"username": "Nudge"},
        {"webhook_url": slack_url(webhook_receiver)},
        http,
        LOOPBACK,
    )

    await sender.send(outbound(TextMessage(text="hi")))

    [request] = webhook_receiver.requests
    assert request.path == "/hook" + SECRET_PATH
    assert request.json["username"] == "Nudge"


@pytest.mark.parametrize(
    ("config", "credentials"),
    [
        ({}, {}),
        ({}, {"webhook_url": "not a url"}),
        ({}, {"webhook_url": "ftp://hooks.slack.com/services/x"}),
        ({"unexpected": True}, {"webhook_url": "https://hooks.slack.com/services/x"}),
    ],
)
async def test_registry_refuses_invalid_slack_config(
    http: httpx.AsyncClient, config: dict[str, Any], credentials: dict[str, str]
) -> None:
    with pytest.raises(ValueError):
        build_sender("slack", config, credentials, http, LOOPBACK)


def test_split_credentials_keeps_the_webhook_url_out_of_the_public_config() -> None:
    url = "https://hooks.slack.com" + SECRET_PATH
    channel = SlackChannelPut.model_validate(
        {"type": "slack", "config": {"webhook_url": url, "icon_emoji": ":bell:"}}
    )

    config, credentials = split_credentials(channel)

    assert config == {"icon_emoji": ":bell:", "timeout_seconds": 10}
    assert credentials == {"webhook_url": url}
    assert SECRET_PATH not in repr(channel)


def test_invalid_webhook_url_error_does_not_repeat_the_value() -> None:
    with pytest.raises(ValidationError) as caught:
        SlackConfig.model_validate({"webhook_url": "javascript:alert(1)//XXXXsecretXXXX"})

    [error] = caught.value.errors()
    assert error["loc"] == ("webhook_url",)
    assert "XXXXsecretXXXX" not in error["msg"]


# --- the API ----------------------------------------------------------------------------------


async def test_api_stores_the_slack_webhook_url_encrypted_and_never_returns_it(
    api: httpx.AsyncClient, tenant: TenantKeys, sessions: async_sessionmaker[AsyncSession]
) -> None:
    url = "https://hooks.slack.com" + SECRET_PATH
    body = {"type": "slack", "config": {"webhook_url": url, "username": "Nudge"}}

    response = await api.put("/v1/channels/team-slack", json=body, headers=tenant.headers())

    assert response.status_code == 200, response.text
    assert SECRET_PATH not in response.text
    assert response.json()["config"] == {"username": "Nudge", "timeout_seconds": 10}
    assert response.json()["credentials_set"] == ["webhook_url"]
    for path in ("/v1/channels", "/v1/channels/team-slack"):
        fetched = await api.get(path, headers=tenant.headers())
        assert fetched.status_code == 200
        assert SECRET_PATH not in fetched.text
    async with sessions() as session:
        row = (
            await session.execute(
                select(Channel).where(Channel.tenant_id == tenant.id, Channel.slug == "team-slack")
            )
        ).scalar_one()
    assert "webhook_url" not in row.config
    assert row.sealed_credentials is not None
    assert SECRET_PATH not in str(row.config) + row.sealed_credentials


async def test_api_refuses_a_slack_channel_without_a_valid_webhook_url(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    missing = await api.put(
        "/v1/channels/team-slack", json={"type": "slack", "config": {}}, headers=tenant.headers()
    )
    assert "body.config.webhook_url" in problems(missing)
    bad = await api.put(
        "/v1/channels/team-slack",
        json={"type": "slack", "config": {"webhook_url": "hooks.slack.com/x"}},
        headers=tenant.headers(),
    )
    assert "body.config.webhook_url" in problems(bad)
