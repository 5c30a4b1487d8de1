"""Twilio's webhooks: status callbacks for the SMS Nudge sent, and the contacts' messages.

Both are form-encoded POSTs signed with ``X-Twilio-Signature`` (HMAC-SHA1 of the URL and
the sorted parameters, keyed with the account's auth token), checked here with Twilio's
own ``RequestValidator`` (https://www.twilio.com/docs/usage/webhooks/webhooks-security).

Parameters follow Twilio's references:

- status callbacks ("Track the Message Status of Outbound Messages",
  https://www.twilio.com/docs/messaging/guides/track-outbound-message-status): MessageSid,
  SmsSid, MessageStatus, SmsStatus, AccountSid, From, To, ApiVersion, MessagingServiceSid,
  and ErrorCode when a message failed or was not delivered;
- incoming messages ("Twilio's request to your incoming message Webhook URL",
  https://www.twilio.com/docs/messaging/guides/webhook-request): MessageSid, SmsSid,
  AccountSid, From, To, Body, NumMedia, MediaUrlN, MediaContentTypeN, SmsStatus=received;
  over WhatsApp also ProfileName, WaId, MessageType, ButtonPayload and ButtonText.

Neither carries a timestamp, so the time of arrival stands in for it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime

from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from nudge.messaging.inbound import (
    BadSignature,
    BadWebhook,
    InboundMessage,
    ReceiptStatus,
    StatusUpdate,
    WebhookBatch,
)

TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
WHATSAPP_PREFIX = "whatsapp:"
# Twilio's message statuses (spec/json/twilio_api_v2010.json, `message_enum_status`) as
# Nudge's receipts. `partially_delivered` is not described by Twilio: it is kept as
# `sent`, so a message not confirmed whole is not counted as delivered.
STATUSES: dict[str, ReceiptStatus] = {
    "accepted": "queued",
    "scheduled": "queued",
    "queued": "queued",
    "sending": "sent",
    "sent": "sent",
    "partially_delivered": "sent",
    "delivered": "delivered",
    "read": "read",
    "undelivered": "undelivered",
    "failed": "failed",
    "canceled": "failed",
}
INBOUND_STATUSES = frozenset({"receiving", "received"})
# What the error codes most seen on receipts mean, in Twilio's words
# (https://www.twilio.com/docs/api/errors/<code>).
REASONS: dict[str, str] = {
    "21211": "Invalid 'To' phone number",
    "21408": "Permission to send an SMS has not been enabled for the region",
    "21610": "The recipient has opted out (replied STOP)",
    "21614": "'To' number is not a valid mobile number",
    "30001": "Queue overflow",
    "30002": "Account suspended",
    "30003": "Unreachable destination handset",
    "30004": "Message blocked",
    "30005": "Unknown destination handset",
    "30006": "Landline or unreachable carrier",
    "30007": "Message filtered by the carrier",
    "30008": "Unknown error",
    "30009": "Missing segment",
    "30010": "Message price exceeds max price",
    "63016": "Outside WhatsApp's 24-hour window only templates can be sent",
}


def verify_signature(
    auth_token: str, url: str, params: Mapping[str, str], header: str | None
) -> None:
    """Raises ``BadSignature`` unless ``header`` signs ``url`` and ``params``.

    ``url`` is the address Twilio was given (the public one, with its query string), not
    the one the request reached behind a proxy.
    """
    if not header:
        raise BadSignature("no X-Twilio-Signature header")
    if not bool(RequestValidator(auth_token).validate(url, dict(params), header)):
        raise BadSignature("X-Twilio-Signature does not match the request")


def parse_webhook(params: Mapping[str, str]) -> WebhookBatch:
    """A status callback as one ``StatusUpdate``, an incoming message as one
    ``InboundMessage``; anything else is a ``BadWebhook``."""
    status = params.get("MessageStatus")
    if _is_inbound(params, status):
        return WebhookBatch(messages=[_inbound(params)])
    if status is not None:
        return WebhookBatch(statuses=[_status_update(params, status)])
    raise BadWebhook("neither a status callback (MessageStatus) nor a message (Body, NumMedia)")


def twiml_empty() -> str:
    """The answer to an incoming message: TwiML with no <Message>, so Twilio sends no reply."""
    return TWIML_EMPTY


def _is_inbound(params: Mapping[str, str], status: str | None) -> bool:
    if params.get("SmsStatus") in INBOUND_STATUSES or status in INBOUND_STATUSES:
        return True
    return status is None and ("Body" in params or "NumMedia" in params)


def _status_update(params: Mapping[str, str], status: str) -> StatusUpdate:
    mapped = STATUSES.get(status.strip().lower())
    if mapped is None:
        raise BadWebhook(f"unknown MessageStatus {status[:40]!r}")
    error_code = (params.get("ErrorCode") or "").strip() or None
    return StatusUpdate(
        provider_message_id=_message_sid(params),
        status=mapped,
        at=datetime.now(UTC),
        error_code=error_code,
        error=_reason(params, status, error_code),
    )


def _reason(params: Mapping[str, str], status: str, error_code: str | None) -> str | None:
    if error_code is not None and error_code in REASONS:
        return REASONS[error_code]
    if params.get("ErrorMessage"):
        return params["ErrorMessage"][:500]
    if status == "canceled":
        return "The message was canceled before it was sent"
    return None


def _inbound(params: Mapping[str, str]) -> InboundMessage:
    media = _media(params)
    payload = params.get("ButtonPayload") or None
    return InboundMessage(
        provider_message_id=_message_sid(params),
        phone=_sender(params),
        at=datetime.now(UTC),
        text=params.get("Body", ""),
        payload=payload,
        kind=_kind(params, media, payload),
        whatsapp_id=params.get("WaId") or None,
        profile_name=params.get("ProfileName") or None,
        media=media,
    )


def _message_sid(params: Mapping[str, str]) -> str:
    # SmsSid is the deprecated twin of MessageSid, still sent for compatibility.
    sid = params.get("MessageSid") or params.get("SmsSid")
    if not sid:
        raise BadWebhook("missing parameter MessageSid")
    return sid


def _sender(params: Mapping[str, str]) -> str:
    """``From`` as E.164: WhatsApp-over-Twilio writes it ``whatsapp:+34600111222``."""
    sender = params.get("From")
    if not sender:
        raise BadWebhook("missing parameter From")
    phone = sender.removeprefix(WHATSAPP_PREFIX)
    if not E164.match(phone):
        raise BadWebhook(f"From {sender[:40]!r} is not an E.164 phone number")
    return phone


def _media(params: Mapping[str, str]) -> list[str]:
    raw = params.get("NumMedia", "0").strip() or "0"
    if not raw.isdigit() or int(raw) > 10:  # Twilio carries at most 10 media per message
        raise BadWebhook(f"NumMedia {raw[:10]!r} is not a count of media")
    media: list[str] = []
    for index in range(int(raw)):
        url = params.get(f"MediaUrl{index}")
        if not url:
            raise BadWebhook(f"missing parameter MediaUrl{index}")
        media.append(url)
    return media


def _kind(params: Mapping[str, str], media: list[str], payload: str | None) -> str:
    """WhatsApp names it (MessageType); for SMS: text, or the first media's type."""
    if params.get("MessageType"):
        return params["MessageType"]
    if payload is not None:
        return "button"
    if media:
        return (params.get("MediaContentType0") or "media").split("/")[0] or "media"
    return "text"
