"""The Slack channel: posts Block Kit messages to a Slack incoming webhook.

The webhook URL is the credential (whoever knows it can post), so it never appears in
error messages, receipts or httpx's request log.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit

import httpx

from nudge.egress import EgressRefused
from nudge.messaging.channels.base import (
    Outbound,
    ProviderRejected,
    ProviderUnavailable,
    Receipt,
    free_form,
    receipt_or_raise,
)
from nudge.models.channels import SlackConfig
from nudge.models.messages import Button, CardMessage, ImageMessage, TextMessage, plain_text

Message = TextMessage | CardMessage | ImageMessage
Block = dict[str, Any]


# Block Kit limits (https://api.slack.com/reference/block-kit).
MAX_BLOCKS = 50
HEADER_LENGTH = 150
SECTION_LENGTH = 3000
CONTEXT_LENGTH = 3000
BUTTON_LABEL_LENGTH = 75
ALT_TEXT_LENGTH = 2000
IMAGE_TITLE_LENGTH = 2000
URL_LENGTH = 3000
WEB_SCHEMES = frozenset({"http", "https"})

_MRKDWN_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


class SlackChannel:
    """One POST per message; no retries here, Temporal retries the activity."""

    # Slack's incoming webhooks ignore Idempotency-Key (it is sent for proxies that honour
    # it): a second POST is a second message in the channel. An unknown outcome is
    # recorded as such, never sent again on its own.
    honours_idempotency_key = False

    def __init__(self, config: SlackConfig, http: httpx.AsyncClient) -> None:
        self._config = config
        self._http = http

    async def send(self, outbound: Outbound) -> Receipt:
        body = json.dumps(
            build_payload(free_form(outbound.message), self._config),
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        timeout = self._config.timeout_seconds
        redacting = _redacting.set(True)
        try:
            response = await self._http.post(
                self._config.webhook_url.get_secret_value(),
                content=body,
                headers={
                    "Content-Type": "application/json; charset=utf-8",
                    "Idempotency-Key": outbound.idempotency_key,
                },
                timeout=timeout,
                # A redirect would carry the message to an address nobody configured.
                follow_redirects=False,
            )
        except EgressRefused as exc:
            raise ProviderRejected(str(exc)) from None
        except httpx.TimeoutException as exc:
            raise ProviderUnavailable(
                f"Slack timed out after {timeout}s: {exc!r}", maybe_delivered=_was_sent(exc)
            ) from exc
        except httpx.TransportError as exc:
            raise ProviderUnavailable(
                f"Slack unreachable: {exc!r}", maybe_delivered=_was_sent(exc)
            ) from exc
        finally:
            _redacting.reset(redacting)
        return receipt_or_raise(response, "Slack")


def _was_sent(exc: httpx.TransportError) -> bool:
    """Whether the request may have reached Slack: all but failures to connect."""
    return not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def build_payload(message: Message, config: SlackConfig) -> dict[str, Any]:
    """The JSON body: Block Kit blocks, and a plain text fallback for notifications."""
    payload: dict[str, Any] = {"text": escape_mrkdwn(plain_text(message))}
    blocks = build_blocks(message)
    if blocks:
        payload["blocks"] = blocks
    if config.username:
        payload["username"] = config.username
    if config.icon_emoji:
        payload["icon_emoji"] = config.icon_emoji
    return payload


def build_blocks(message: Message) -> list[Block]:
    if isinstance(message, CardMessage):
        return _card_blocks(message)
    if isinstance(message, ImageMessage):
        image = message.image
        caption = image.caption.strip()
        if not _web_url(image.url):
            return _sections("\n".join(filter(None, (caption, image.url))), MAX_BLOCKS)
        block = _image_block(image.url, caption or "Image")
        if caption:
            block["title"] = _plain(_truncate(caption, IMAGE_TITLE_LENGTH))
        return [block]
    return _sections(message.text, MAX_BLOCKS)


def _card_blocks(message: CardMessage) -> list[Block]:
    card = message.card
    blocks: list[Block] = []
    title = " ".join(card.title.split())  # a header is one line of plain text
    if title:
        blocks.append({"type": "header", "text": _plain(_truncate(title, HEADER_LENGTH))})
    # Keep room for the image, actions and context blocks below the text.
    blocks += _sections(card.text, MAX_BLOCKS - len(blocks) - 3)
    if card.image_url:
        if _web_url(card.image_url):
            blocks.append(_image_block(card.image_url, title or "Image"))
        else:
            blocks.append(_context(escape_mrkdwn(card.image_url)))
    linked = [b for b in card.buttons if b.url is not None and _web_url(b.url)]
    if linked:
        blocks.append({"type": "actions", "elements": _link_buttons(linked)})
    # An incoming webhook cannot receive interactive callbacks: a button without a
    # link would do nothing when pressed, so its label is shown as text instead.
    unlinked = [b for b in card.buttons if b not in linked]
    if unlinked:
        blocks.append(_context(" · ".join(escape_mrkdwn(b.label) for b in unlinked)))
    return blocks


def _link_buttons(buttons: list[Button]) -> list[Block]:
    elements: list[Block] = []
    used: set[str] = set()
    for button in buttons:
        # action_id must be unique within the block; two buttons may share an action.
        action_id, n = button.action, 1
        while action_id in used:
            n += 1
            action_id = f"{button.action}-{n}"
        used.add(action_id)
        elements.append(
            {
                "type": "button",
                "text": _plain(_truncate(button.label, BUTTON_LABEL_LENGTH)),
                "url": button.url,
                "action_id": action_id,
            }
        )
    return elements


def _image_block(url: str, alt_text: str) -> Block:
    return {"type": "image", "image_url": url, "alt_text": _truncate(alt_text, ALT_TEXT_LENGTH)}


def _sections(text: str, max_blocks: int) -> list[Block]:
    chunks = mrkdwn_chunks(text, SECTION_LENGTH)
    if len(chunks) > max_blocks:
        chunks = chunks[:max_blocks]
        chunks[-1] = chunks[-1][: SECTION_LENGTH - 1] + "…"
    return [{"type": "section", "text": {"type": "mrkdwn", "text": chunk}} for chunk in chunks]


def _context(mrkdwn: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": mrkdwn[:CONTEXT_LENGTH]}]}


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _truncate(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def _web_url(url: str) -> bool:
    # Slack refuses the whole message (invalid_blocks) for a non-web or overlong URL.
    return len(url) <= URL_LENGTH and urlsplit(url.strip()).scheme.lower() in WEB_SCHEMES


def escape_mrkdwn(text: str) -> str:
    """Text for a Slack mrkdwn field: only &, < and > are escaped, as Slack asks."""
    return "".join(_MRKDWN_ESCAPES.get(char, char) for char in text)


def mrkdwn_chunks(text: str, size: int) -> list[str]:
    """``text`` escaped, in non-blank pieces of at most ``size`` characters.

    Pieces are cut between lines or words where possible, and never inside an escape.
    """
    chunks: list[str] = []
    rest = text
    while rest.strip():
        end = _fitting_prefix(rest, size)
        if end < len(rest):
            cut = max(rest.rfind("\n", 0, end), rest.rfind(" ", 0, end))
            if cut > end // 2:
                end = cut + 1
        chunk = escape_mrkdwn(rest[:end]).strip()
        if chunk:
            chunks.append(chunk)
        rest = rest[end:]
    return chunks


def _fitting_prefix(text: str, size: int) -> int:
    """The length of the longest prefix of ``text`` whose escaped form fits in ``size``."""
    length = 0
    for index, char in enumerate(text):
        length += len(_MRKDWN_ESCAPES.get(char, char))
        if length > size:
            return index
    return len(text)


# httpx logs every request's full URL at INFO; for Slack the URL is the secret.
_redacting: ContextVar[bool] = ContextVar("nudge_slack_redacting", default=False)


class _RedactWebhookUrl(logging.Filter):
    """Shortens URLs in httpx's request log to scheme and host while a Slack send runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _redacting.get() and isinstance(record.args, tuple):
            record.args = tuple(
                f"{arg.scheme}://{arg.netloc.decode()}/[redacted]"
                if isinstance(arg, httpx.URL)
                else arg
                for arg in record.args
            )
        return True


_URL_FILTER = _RedactWebhookUrl()
logging.getLogger("httpx").addFilter(_URL_FILTER)
