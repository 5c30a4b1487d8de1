"""What a provider's webhook tells Nudge, whatever the provider: receipts and messages.

Each provider's module (``nudge.messaging.providers``) checks the signature and turns its
own body into these; the webhook route stores them the same way for every provider.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

ReceiptStatus = Literal["queued", "sent", "delivered", "read", "failed", "undelivered"]


class BadSignature(Exception):
    """The webhook is not signed with the channel's secret (answered 401, nothing stored)."""


class BadWebhook(ValueError):
    """Signed, but not a body this provider sends (answered 400)."""


@dataclass(frozen=True)
class StatusUpdate:
    """The provider's word on one message Nudge sent."""

    provider_message_id: str
    status: ReceiptStatus
    at: datetime
    error_code: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class InboundMessage:
    """A message a contact wrote to one of the tenant's numbers."""

    provider_message_id: str
    # The sender as E.164 (`+34600111222`); WhatsApp's `wa_id` is that without the `+`.
    phone: str
    at: datetime
    text: str
    # A reply button's payload (template quick reply or interactive button id), if pressed.
    payload: str | None = None
    # Text, button, interactive, image, …: as the provider names it.
    kind: str = "text"
    # The provider's `wa_id` when it sent one.
    whatsapp_id: str | None = None
    # The name the contact's profile shows, when the provider sends it.
    profile_name: str | None = None
    # Links to media the contact sent (Twilio's MediaUrlN; WhatsApp media ids).
    media: list[str] = field(default_factory=list)
    # The provider's id of the message this one answers (WhatsApp's `context.id`): which
    # card a pressed reply button belongs to.
    context_message_id: str | None = None


@dataclass(frozen=True)
class WebhookBatch:
    statuses: list[StatusUpdate] = field(default_factory=list)
    messages: list[InboundMessage] = field(default_factory=list)
