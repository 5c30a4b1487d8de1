"""WhatsApp Cloud API webhooks: the signature, the subscription handshake and the body.

References:

- Signature and handshake: Graph API "Webhooks: Getting Started"
  (developers.facebook.com/docs/graph-api/webhooks/getting-started) — every notification is
  signed ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body, keyed with the app
  secret>``; the verification request is ``GET ?hub.mode=subscribe&hub.challenge=…&
  hub.verify_token=…`` and is answered with the challenge.
- Bodies: the "messages webhook reference" and its pages for status, text, button,
  interactive and media messages
  (developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/
  messages), and the webhook types of Meta's WhatsApp-Nodejs-SDK (src/types/webhooks.ts):
  ``{"object": "whatsapp_business_account", "entry": [{"id", "changes": [{"field":
  "messages", "value": {"messaging_product", "metadata", "contacts": [{"profile":
  {"name"}, "wa_id"}], "messages": [...], "statuses": [{"id", "status", "timestamp",
  "recipient_id", "errors": [{"code", "title", "message", "error_data": {"details"}}]}]}}]}]}``.

Everything in a body is data: text is stored as written, never evaluated or rendered.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

from nudge.messaging.inbound import (
    BadSignature,
    BadWebhook,
    InboundMessage,
    ReceiptStatus,
    StatusUpdate,
    WebhookBatch,
)

SIGNATURE_HEADER = "X-Hub-Signature-256"
SIGNATURE_PREFIX = "sha256="
OBJECT = "whatsapp_business_account"
# WhatsApp's statuses that Nudge records. Others ("played" for voice messages, "deleted",
# future ones) are skipped, not refused: a refused body is retried by Meta for days.
STATUSES: frozenset[str] = frozenset({"sent", "delivered", "read", "failed"})
# The message types whose object carries a media id (and maybe a caption or file name).
MEDIA_TYPES = frozenset({"image", "video", "audio", "document", "sticker"})
MAX_TIMESTAMP = 253402300799  # 9999-12-31T23:59:59Z: anything later is not a real time

JsonObject = dict[str, Any]


class _Malformed(Exception):
    """A shape error deep in the body; becomes ``BadWebhook`` with the path that failed."""


# --- signature and handshake ---------------------------------------------------------------------


def verify_signature(app_secret: str, body: bytes, header: str | None) -> None:
    """Raise ``BadSignature`` unless ``header`` is ``sha256=<hex HMAC-SHA256 of body>``."""
    if not header:
        raise BadSignature(f"missing {SIGNATURE_HEADER}")
    if not header.startswith(SIGNATURE_PREFIX):
        raise BadSignature(f"{SIGNATURE_HEADER} is not a sha256= signature")
    expected = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    given = header[len(SIGNATURE_PREFIX) :].strip().lower()
    # Compared as bytes: compare_digest refuses non-ASCII str, and a forged header may have it.
    if not hmac.compare_digest(expected.encode(), given.encode(errors="replace")):
        raise BadSignature(f"{SIGNATURE_HEADER} does not match the body")


def handshake(params: Mapping[str, str], verify_token: str) -> str | None:
    """The ``hub.challenge`` to answer Meta's subscription check with, or None to refuse it."""
    challenge = params.get("hub.challenge")
    token = params.get("hub.verify_token")
    if params.get("hub.mode") != "subscribe" or not challenge or token is None:
        return None
    if not hmac.compare_digest(token.encode(), verify_token.encode()):
        return None
    return challenge


# --- the body -----------------------------------------------------------------------------------


def parse_webhook(body: bytes) -> WebhookBatch:
    """The receipts and messages of one notification; ``BadWebhook`` naming what is wrong."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadWebhook("the body is not JSON") from None
    try:
        return _batch(_object(document, "body"))
    except _Malformed as exc:
        raise BadWebhook(str(exc)) from None


def _batch(document: JsonObject) -> WebhookBatch:
    if document.get("object") != OBJECT:
        raise _Malformed(f"`object` is {document.get('object')!r}, not {OBJECT!r}")
    batch = WebhookBatch()
    for e, entry in enumerate(_list(document, "entry", "body")):
        where = f"entry[{e}]"
        for c, change in enumerate(_list(_object(entry, where), "changes", where)):
            _read_change(_object(change, f"{where}.changes[{c}]"), f"{where}.changes[{c}]", batch)
    return batch


def _read_change(change: JsonObject, where: str, batch: WebhookBatch) -> None:
    # Other fields (template status, account updates, …) are not about messages: skipped.
    if change.get("field") != "messages":
        return
    value = _object(change.get("value"), f"{where}.value")
    where = f"{where}.value"
    names = _profile_names(_list(value, "contacts", where, required=False), where)
    for s, status in enumerate(_list(value, "statuses", where, required=False)):
        update = _status(_object(status, f"{where}.statuses[{s}]"), f"{where}.statuses[{s}]")
        if update is not None:
            batch.statuses.append(update)
    for m, message in enumerate(_list(value, "messages", where, required=False)):
        batch.messages.append(
            _message(_object(message, f"{where}.messages[{m}]"), f"{where}.messages[{m}]", names)
        )


def _profile_names(contacts: list[Any], where: str) -> dict[str, str]:
    """wa_id → the profile name WhatsApp shows for that contact."""
    names: dict[str, str] = {}
    for i, contact in enumerate(contacts):
        contact = _object(contact, f"{where}.contacts[{i}]")
        profile = contact.get("profile")
        name = profile.get("name") if isinstance(profile, dict) else None
        wa_id = contact.get("wa_id")
        if isinstance(wa_id, str) and isinstance(name, str) and name:
            names[wa_id] = name
    return names


def _status(status: JsonObject, where: str) -> StatusUpdate | None:
    value = _str(status, "status", where)
    if value not in STATUSES:
        return None
    code, error = _status_error(status, where) if value == "failed" else (None, None)
    return StatusUpdate(
        provider_message_id=_str(status, "id", where),
        status=cast(ReceiptStatus, value),
        at=_timestamp(status, where),
        error_code=code,
        error=error,
    )


def _status_error(status: JsonObject, where: str) -> tuple[str | None, str | None]:
    """The first error's code, and its title, message and details in one line."""
    errors = _list(status, "errors", where, required=False)
    if not errors:
        return None, None
    first = _object(errors[0], f"{where}.errors[0]")
    code = first.get("code")
    data = first.get("error_data")
    details = data.get("details") if isinstance(data, dict) else None
    parts: list[str] = []
    for part in (first.get("title"), first.get("message"), details):
        if isinstance(part, str) and part.strip() and part.strip() not in parts:
            parts.append(part.strip())
    return (str(code) if isinstance(code, int | str) else None), ("; ".join(parts) or None)


def _message(message: JsonObject, where: str, names: dict[str, str]) -> InboundMessage:
    sender = _str(message, "from", where)
    if not sender.isascii() or not sender.isdigit():
        raise _Malformed(f"{where}.from is not a WhatsApp id (digits)")
    kind = _str(message, "type", where)
    text, payload, media = _content(message, kind, where)
    return InboundMessage(
        provider_message_id=_str(message, "id", where),
        phone=f"+{sender}",
        at=_timestamp(message, where),
        text=text,
        payload=payload,
        kind=kind,
        whatsapp_id=sender,
        profile_name=names.get(sender),
        media=media,
        context_message_id=_context_id(message),
    )


def _context_id(message: JsonObject) -> str | None:
    """The wamid the message replies to (a button press names the message it was on)."""
    context = message.get("context")
    if isinstance(context, dict) and isinstance(context.get("id"), str):
        return str(context["id"])
    return None


def _content(message: JsonObject, kind: str, where: str) -> tuple[str, str | None, list[str]]:
    """(text, button payload, media ids) for one message of type ``kind``."""
    if kind == "text":
        return (
            _str(_object(message.get("text"), f"{where}.text"), "body", f"{where}.text"),
            None,
            [],
        )
    if kind == "button":
        # A template's quick-reply button: the payload given on send, and the label.
        button = _object(message.get("button"), f"{where}.button")
        payload = _str(button, "payload", f"{where}.button")
        return _optional(button, "text", f"{where}.button") or payload, payload, []
    if kind == "interactive":
        return _interactive(_object(message.get("interactive"), f"{where}.interactive"), where)
    if kind in MEDIA_TYPES:
        return _media(_object(message.get(kind), f"{where}.{kind}"), kind, f"{where}.{kind}")
    if kind == "reaction":
        reaction = message.get("reaction")
        emoji = reaction.get("emoji") if isinstance(reaction, dict) else None
        return (emoji if isinstance(emoji, str) and emoji else "[reaction]"), None, []
    # location, contacts, order, system, unsupported, …: kept as a marker of their kind.
    return f"[{kind}]", None, []


def _interactive(interactive: JsonObject, where: str) -> tuple[str, str | None, list[str]]:
    where = f"{where}.interactive"
    reply_type = _str(interactive, "type", where)
    if reply_type not in {"button_reply", "list_reply"}:
        return f"[{reply_type}]", None, []
    reply = _object(interactive.get(reply_type), f"{where}.{reply_type}")
    payload = _str(reply, "id", f"{where}.{reply_type}")
    return _optional(reply, "title", f"{where}.{reply_type}") or payload, payload, []


def _media(media: JsonObject, kind: str, where: str) -> tuple[str, str | None, list[str]]:
    text = _optional(media, "caption", where) or _optional(media, "filename", where)
    media_id = _optional(media, "id", where)
    return text or f"[{kind}]", None, [media_id] if media_id else []


# --- shape checks -------------------------------------------------------------------------------


def _object(value: Any, where: str) -> JsonObject:
    if not isinstance(value, dict):
        raise _Malformed(f"{where} is not an object")
    return value


def _list(parent: JsonObject, name: str, where: str, *, required: bool = True) -> list[Any]:
    value = parent.get(name)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise _Malformed(f"{where}.{name} is {'not a list' if value is not None else 'missing'}")
    return value


def _str(parent: JsonObject, name: str, where: str) -> str:
    value = parent.get(name)
    if not isinstance(value, str) or not value:
        raise _Malformed(f"{where}.{name} is {'missing' if value is None else 'not a string'}")
    return value


def _optional(parent: JsonObject, name: str, where: str) -> str | None:
    value = parent.get(name)
    if value is not None and not isinstance(value, str):
        raise _Malformed(f"{where}.{name} is not a string")
    return value or None


def _timestamp(parent: JsonObject, where: str) -> datetime:
    """WhatsApp's ``timestamp``: unix seconds, as a string (an int is taken too)."""
    value = parent.get("timestamp")
    if isinstance(value, str) and value.isascii() and value.isdigit():
        seconds = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        raise _Malformed(f"{where}.timestamp is not unix seconds")
    if not 0 <= seconds <= MAX_TIMESTAMP:
        raise _Malformed(f"{where}.timestamp is out of range")
    return datetime.fromtimestamp(seconds, UTC)
