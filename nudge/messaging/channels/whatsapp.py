"""The WhatsApp channel: sends messages through Meta's WhatsApp Cloud API.

References (checked for every shape below):

- Send Message, ``POST /{Version}/{Phone-Number-ID}/messages``: the ``sendMessage`` operation
  of Meta's OpenAPI document ``business-messaging-api_v23.0.yaml`` (github.com/facebook/openapi),
  its examples "Send Text Message", "Send Image Message by URL", "Send Reply Button",
  "Send List Message", "Send Message Template Interactive" and the response
  ``{"messaging_product", "contacts": [{"input", "wa_id"}], "messages": [{"id"}]}``.
- Limits: developers.facebook.com/documentation/business-messaging/whatsapp/messages/ —
  text body 4096 characters; interactive body 1024, footer and header text 60; reply buttons
  1 to 3, id 256 and title 20 characters; list button 20, rows 10 in all, row id 200,
  row title 24, row description 72; a list's header is text only.
- Graph errors: ``{"error": {"message", "type", "code", "error_subcode", "error_data":
  {"messaging_product", "details"}, "fbtrace_id"}}`` (the ``GraphAPIError`` schema of the same
  OpenAPI document; the Cloud API error-codes page for what each code means).
- The phone number's health: ``GET /{Version}/{Phone-Number-ID}?fields=quality_rating,
  messaging_limit_tier`` (Graph's WhatsAppBusinessPhoneNumber node).

The access token travels only in the ``Authorization`` header; it is never put in a URL,
an error message or a receipt.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpx

from nudge.egress import EgressRefused
from nudge.messaging.channels.base import (
    MAX_BODY_KEPT,
    RETRYABLE_CLIENT_ERRORS,
    ChannelError,
    Outbound,
    ProviderRejected,
    ProviderUnavailable,
    Receipt,
    Recipient,
    RecipientUnreachable,
)
from nudge.models.channels import WhatsAppConfig
from nudge.models.messages import (
    AnyMessage,
    Button,
    CardMessage,
    ImageMessage,
    WhatsAppTemplate,
    WhatsAppTemplateMessage,
)

Payload = dict[str, Any]

TEXT_BODY_LENGTH = 4096
CAPTION_LENGTH = 1024
INTERACTIVE_BODY_LENGTH = 1024
MAX_REPLY_BUTTONS = 3
REPLY_ID_LENGTH = 256
REPLY_TITLE_LENGTH = 20
MAX_LIST_ROWS = 10
ROW_ID_LENGTH = 200
ROW_TITLE_LENGTH = 24
ROW_DESCRIPTION_LENGTH = 72
# The label of the button that opens a list (at most 20 characters). WhatsApp shows it under
# the body; it is the one word Nudge adds to a card.
LIST_BUTTON_LABEL = "Options"

# Graph error codes (Cloud API error-codes page) that say "come back later": throttling
# (4 app, 80007 WABA, 130429 throughput, 131056 business/user pair), temporary failures
# (2 service, 131000 something went wrong, 131016 service unavailable, 133004 server
# temporarily unavailable).
UNAVAILABLE_CODES = frozenset({2, 4, 80007, 130429, 131000, 131016, 131056, 133004})
# Codes that will not go away by retrying: a bad or expired token (190), outside the 24-hour
# window (131047), undeliverable (131026), unsupported message type (131051), template
# parameters wrong (132000) or template missing (132001), invalid parameter (100).
REJECTED_CODES = frozenset({100, 190, 131026, 131047, 131051, 132000, 132001})
HEALTH_FIELDS = ("quality_rating", "messaging_limit_tier")
_BREAKS = re.compile(r"[\t\n\r\v\f]+")
_LONG_SPACES = re.compile(r" {5,}")


class WhatsAppChannel:
    """One POST per message; no retries here, Temporal retries the activity."""

    # The Cloud API has no idempotency key: a second POST is a second message on the
    # contact's phone. An unknown outcome is recorded as such, never sent again on its own.
    honours_idempotency_key = False

    def __init__(self, config: WhatsAppConfig, http: httpx.AsyncClient) -> None:
        self._config = config
        self._http = http

    async def send(self, outbound: Outbound) -> Receipt:
        payload = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": recipient_id(outbound.recipient),
            **build_message(outbound.message),
        }
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        response = await _call(
            self._config,
            self._http,
            "POST",
            graph_url(self._config, "messages"),
            content=body,
            headers={"Content-Type": "application/json"},
        )
        return receipt(response, self._config)


async def phone_number_health(
    config: WhatsAppConfig, http: httpx.AsyncClient
) -> dict[str, str | None]:
    """The number's ``quality_rating`` (GREEN, YELLOW, RED, UNKNOWN) and
    ``messaging_limit_tier`` (TIER_250, TIER_1K, …, TIER_UNLIMITED), None when not given."""
    response = await _call(
        config,
        http,
        "GET",
        graph_url(config),
        params={"fields": ",".join(HEALTH_FIELDS)},
    )
    if not response.is_success:
        raise graph_error(response, config)
    answer = _json_object(response)
    return {name: _optional_str(answer.get(name)) for name in HEALTH_FIELDS}


def graph_url(config: WhatsAppConfig, edge: str | None = None) -> str:
    """``{base_url}/{api_version}/{phone_number_id}[/{edge}]``."""
    base = str(config.base_url).rstrip("/")
    url = f"{base}/{config.api_version}/{config.phone_number_id}"
    return f"{url}/{edge}" if edge else url


def recipient_id(recipient: Recipient) -> str:
    """The digits WhatsApp sends to: the WhatsApp id, else the phone number's digits."""
    for candidate in (recipient.whatsapp_id, recipient.phone):
        digits = "".join(char for char in candidate or "" if char.isascii() and char.isdigit())
        if digits:
            return digits
    raise RecipientUnreachable(f"recipient {recipient.external_id!r} has no WhatsApp number")


# --- the message --------------------------------------------------------------------------------


def build_message(message: AnyMessage) -> Payload:
    """The ``type`` and its object for one message (the envelope is added by ``send``)."""
    if isinstance(message, WhatsAppTemplateMessage):
        return {"type": "template", "template": template_object(message.template)}
    if isinstance(message, CardMessage):
        return card_message(message)
    if isinstance(message, ImageMessage):
        return image_message(message.image.url, message.image.caption)
    return text_message(message.text)


def text_message(text: str) -> Payload:
    # preview_url off: a link in a follow-up is the customer's data, not something to unfurl.
    return {
        "type": "text",
        "text": {"body": truncate(text, TEXT_BODY_LENGTH), "preview_url": False},
    }


def image_message(url: str, caption: str) -> Payload:
    """An image by link; a link WhatsApp cannot fetch (not http/https) goes as text instead."""
    caption = caption.strip()
    if not _web_url(url):
        return text_message("\n".join(filter(None, (caption, url))) or " ")
    image: Payload = {"link": url}
    if caption:
        image["caption"] = truncate(caption, CAPTION_LENGTH)
    return {"type": "image", "image": image}


def card_message(message: CardMessage) -> Payload:
    """Reply buttons for up to 3 actions, a one-section list for 4 to 10.

    A button's ``url`` (the signed link that records a press) is dropped: WhatsApp reply
    buttons cannot open links, and a press comes back to Nudge's webhook as an incoming
    message whose payload is the button's id, the button's action. Two buttons with the
    same action would be one answer, so only the first of them is kept.
    """
    card = message.card
    body = truncate(_card_text(card.title, card.text), INTERACTIVE_BODY_LENGTH)
    buttons = _distinct_actions(card.buttons)
    if not buttons:
        # An interactive message needs at least one button: without, the card is its image
        # with the text as caption, or plain text.
        if card.image_url and _https_url(card.image_url):
            return image_message(card.image_url, body)
        return text_message(_card_text(card.title, card.text))
    if len(buttons) <= MAX_REPLY_BUTTONS:
        return {"type": "interactive", "interactive": _reply_buttons(body, buttons, card.image_url)}
    return {"type": "interactive", "interactive": _list(body, buttons)}


def _reply_buttons(body: str, buttons: list[Button], image_url: str | None) -> Payload:
    titles = _unique(
        (truncate(_label(b), REPLY_TITLE_LENGTH) for b in buttons),
        REPLY_TITLE_LENGTH,
    )
    interactive: Payload = {"type": "button"}
    if image_url and _https_url(image_url):
        interactive["header"] = {"type": "image", "image": {"link": image_url}}
    interactive["body"] = {"text": body}
    interactive["action"] = {
        "buttons": [
            {"type": "reply", "reply": {"id": b.action[:REPLY_ID_LENGTH], "title": title}}
            for b, title in zip(buttons, titles, strict=True)
        ]
    }
    return interactive


def _list(body: str, buttons: list[Button]) -> Payload:
    # A list's header may only be text, so a card's image does not travel with it.
    rows = [_row(b) for b in buttons[:MAX_LIST_ROWS]]
    titles = _unique((row["title"] for row in rows), ROW_TITLE_LENGTH)
    for row, title in zip(rows, titles, strict=True):
        row["title"] = title
    return {
        "type": "list",
        "body": {"text": body},
        "action": {"button": LIST_BUTTON_LABEL, "sections": [{"rows": rows}]},
    }


def _row(button: Button) -> Payload:
    label = _label(button)
    row: Payload = {"id": button.action[:ROW_ID_LENGTH], "title": truncate(label, ROW_TITLE_LENGTH)}
    if len(label) > ROW_TITLE_LENGTH:
        # The whole label still shows, under the cut title.
        row["description"] = truncate(label, ROW_DESCRIPTION_LENGTH)
    return row


def template_object(template: WhatsAppTemplate) -> Payload:
    """``{"name", "language": {"code"}, "components": [...]}``, empty components left out."""
    components: list[Payload] = []
    if template.header:
        components.append({"type": "header", "parameters": _text_parameters(template.header)})
    if template.body:
        components.append({"type": "body", "parameters": _text_parameters(template.body)})
    for index, payload in enumerate(template.buttons):
        # An empty payload leaves that button as approved (WhatsApp then returns its text).
        if payload:
            components.append(_quick_reply(index, payload))
    result: Payload = {"name": template.name, "language": {"code": template.language}}
    if components:
        result["components"] = components
    return result


def _text_parameters(values: list[str]) -> list[Payload]:
    return [{"type": "text", "text": parameter_text(value)} for value in values]


def parameter_text(value: str) -> str:
    """A template parameter WhatsApp takes: it refuses new lines, tabs and more than four
    spaces in a row in one (Cloud API error 132018), so those become spaces."""
    return _LONG_SPACES.sub("    ", _BREAKS.sub(" ", value))


def _quick_reply(index: int, payload: str) -> Payload:
    return {
        "type": "button",
        "sub_type": "quick_reply",
        "index": str(index),
        "parameters": [{"type": "payload", "payload": payload}],
    }


def _label(button: Button) -> str:
    # One line; a label rendered blank falls back to the action, as WhatsApp needs a title.
    return " ".join(button.label.split()) or button.action


def _card_text(title: str, text: str) -> str:
    return "\n\n".join(part for part in (title.strip(), text.strip()) if part) or " "


def _distinct_actions(buttons: list[Button]) -> list[Button]:
    seen: set[str] = set()
    distinct: list[Button] = []
    for button in buttons:
        if button.action not in seen:
            seen.add(button.action)
            distinct.append(button)
    return distinct


def _unique(titles: Iterable[str], limit: int) -> list[str]:
    """Titles made distinct (WhatsApp refuses two equal button or row titles): a repeated one
    gets " 2", " 3"… appended, in place of its last characters when there is no room."""
    result: list[str] = []
    for title in titles:
        candidate, n = title, 1
        while candidate in result:
            n += 1
            suffix = f" {n}"
            candidate = title[: limit - len(suffix)] + suffix
        result.append(candidate)
    return result


def truncate(text: str, length: int) -> str:
    """``text`` cut to ``length`` characters, the last one an ellipsis when it was cut."""
    return text if len(text) <= length else text[: length - 1] + "…"


def _web_url(url: str) -> bool:
    return urlsplit(url.strip()).scheme.lower() in {"http", "https"}


def _https_url(url: str) -> bool:
    return urlsplit(url.strip()).scheme.lower() == "https"


# --- the call and its answer ---------------------------------------------------------------------


async def _call(
    config: WhatsAppConfig, http: httpx.AsyncClient, method: str, url: str, **options: Any
) -> httpx.Response:
    headers = {
        **options.pop("headers", {}),
        "Authorization": f"Bearer {config.access_token.get_secret_value()}",
    }
    timeout = config.timeout_seconds
    try:
        return await http.request(
            method,
            url,
            headers=headers,
            timeout=timeout,
            # A redirect would carry the token to an address nobody configured.
            follow_redirects=False,
            **options,
        )
    except EgressRefused as exc:
        raise ProviderRejected(str(exc)) from None
    except httpx.TimeoutException as exc:
        raise ProviderUnavailable(
            f"WhatsApp timed out after {timeout}s: {exc!r}", maybe_delivered=_was_sent(exc)
        ) from exc
    except httpx.TransportError as exc:
        raise ProviderUnavailable(
            f"WhatsApp unreachable: {exc!r}", maybe_delivered=_was_sent(exc)
        ) from exc


def _was_sent(exc: httpx.TransportError) -> bool:
    """Whether the request may have reached Meta: all but failures to connect."""
    return not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def receipt(response: httpx.Response, config: WhatsAppConfig) -> Receipt:
    """The receipt for an accepted message, naming its ``wamid``; otherwise the error."""
    if not response.is_success:
        raise graph_error(response, config)
    answer = _answer(response, config)
    wamid = _wamid(response)
    if wamid is None:
        # Accepted, yet without the id later receipts name: the message may well be on its
        # way, so this is an unknown outcome rather than a failure to resend.
        raise ProviderUnavailable(
            f"WhatsApp answered {response.status_code} without a message id: {answer['body']}",
            response=answer,
            maybe_delivered=True,
        )
    return Receipt(answer, provider_message_id=wamid)


def _wamid(response: httpx.Response) -> str | None:
    try:
        messages = _json_object(response).get("messages")
        wamid = messages[0]["id"] if isinstance(messages, list) and messages else None
    except (KeyError, TypeError):
        return None
    return wamid if isinstance(wamid, str) and wamid else None


def graph_error(response: httpx.Response, config: WhatsAppConfig) -> ChannelError:
    """A Graph error answer as the channel error that says whether to retry.

    The error text and ``response`` carry Graph's message and code (and ``fbtrace_id``, which
    Meta's support asks for); never the token.
    """
    answer = _answer(response, config)
    error = _graph_error_object(response)
    code = error.get("code") if isinstance(error.get("code"), int) else None
    for name in ("code", "error_subcode", "type", "message"):
        if error.get(name) is not None:
            answer[name if name.startswith("error_") else f"error_{name}"] = error[name]
    if error.get("fbtrace_id") is not None:
        answer["fbtrace_id"] = error["fbtrace_id"]
    if "error_message" in answer:
        answer["error_message"] = _redact(str(answer["error_message"]), config)
    text = _redact(_error_text(error), config) or answer["body"]
    message = f"WhatsApp answered {response.status_code}: {text}"
    if _retryable(response.status_code, code):
        return ProviderUnavailable(message, response=answer)
    return ProviderRejected(message, response=answer)


def _graph_error_object(response: httpx.Response) -> dict[str, Any]:
    error = _json_object(response).get("error")
    return error if isinstance(error, dict) else {}


def _retryable(status: int, code: int | None) -> bool:
    # The Graph code is the more precise word: a 400 "rate limit hit" is worth a retry.
    if code in UNAVAILABLE_CODES:
        return True
    if code in REJECTED_CODES or status == 401:
        return False
    return status >= 500 or status in RETRYABLE_CLIENT_ERRORS


def _error_text(error: dict[str, Any]) -> str:
    """E.g. "(#131047) Re-engagement message: Message failed to send because more than 24
    hours have passed since the customer last replied to this number"."""
    text = _optional_str(error.get("message")) or ""
    code = error.get("code")
    if code is not None and f"#{code}" not in text:
        text = f"{text} (code {code})".strip()
    data = error.get("error_data")
    details = _optional_str(data.get("details")) if isinstance(data, dict) else None
    return f"{text}: {details}" if details and details not in text else text


def _answer(response: httpx.Response, config: WhatsAppConfig) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "status_code": response.status_code,
        "body": _redact(response.text[:MAX_BODY_KEPT], config),
    }
    if "retry-after" in response.headers:
        answer["retry_after"] = response.headers["retry-after"]
    return answer


def _redact(text: str, config: WhatsAppConfig) -> str:
    # Meta does not echo the token, but a proxy in between might: it never reaches a log.
    token = config.access_token.get_secret_value()
    return text.replace(token, "[redacted]") if token else text


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        parsed = response.json()
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
