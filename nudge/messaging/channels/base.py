"""The interface every channel implements, and the errors that tell retry from give-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from nudge.models.messages import (
    AnyMessage,
    CardMessage,
    ImageMessage,
    TextMessage,
    WhatsAppTemplateMessage,
)

FreeForm = TextMessage | CardMessage | ImageMessage


@dataclass(frozen=True)
class Recipient:
    external_id: str
    name: str | None = None
    email: str | None = None
    phone: str | None = None  # E.164, e.g. +34600111222
    chat_id: str | None = None
    # The WhatsApp id (digits, no +) when it differs from the phone; else the phone's digits.
    whatsapp_id: str | None = None


@dataclass(frozen=True)
class Outbound:
    """One rendered message for one recipient, ready to leave on one channel."""

    tenant: str
    channel: str
    idempotency_key: str
    recipient: Recipient
    # A WhatsApp template only reaches a WhatsApp channel; the others see `free_form`.
    message: AnyMessage
    source: dict[str, Any] = field(default_factory=dict)
    # Where the provider posts delivery receipts for this message (Nudge's webhook URL of
    # the channel), for providers that take it per message (Twilio's StatusCallback).
    status_callback_url: str | None = None
    # What sends it (`notification:<id>`, `record:<id>`, `enrollment:<id>`): where its
    # delivery states are shown.
    belongs_to: str | None = None


@dataclass(frozen=True)
class Receipt:
    """What the provider answered when it accepted the message (kept on the delivery)."""

    response: dict[str, Any]
    # The provider's id of the message (a WhatsApp `wamid`, a Twilio `SM…` sid): later
    # receipts name it.
    provider_message_id: str | None = None
    # SMS: how many segments the provider will bill (it splits long bodies itself).
    segments: int | None = None


class ChannelError(Exception):
    """The provider did not take the message. ``retryable`` says whether to try again."""

    retryable: bool = True

    def __init__(
        self,
        message: str,
        *,
        response: dict[str, Any] | None = None,
        maybe_delivered: bool = False,
    ) -> None:
        super().__init__(message)
        self.response = response or {}
        # The message had left when the answer was lost (a read timeout, a connection
        # dropped after the body was sent): the provider may have taken it.
        self.maybe_delivered = maybe_delivered


class ProviderUnavailable(ChannelError):
    """5xx, timeout or connection error: try again later with the same idempotency key."""

    retryable = True


class ProviderRejected(ChannelError):
    """4xx or an explicit refusal: sending again will not help."""

    retryable = False


class RecipientUnreachable(ChannelError):
    """The recipient has no address on this channel (no email for an email channel)."""

    retryable = False


def free_form(message: AnyMessage) -> FreeForm:
    """The message for a channel that has no WhatsApp templates: a template goes as its
    `text`; one without text cannot go at all."""
    if not isinstance(message, WhatsAppTemplateMessage):
        return message
    if message.template.text is None:
        raise ProviderRejected(
            f"WhatsApp template {message.template.name!r} has no `text` to send on this channel"
        )
    return TextMessage.model_construct(kind="text", text=message.template.text)


class ChannelSender(Protocol):
    """Sends one message. Raises a ``ChannelError`` subclass when the provider does not take it.

    ``honours_idempotency_key`` says whether the provider drops a second message with the
    same ``Outbound.idempotency_key``: only then is a try whose outcome is unknown sent
    again on its own; otherwise it is recorded ``unknown`` for an operator to resend.
    """

    @property
    def honours_idempotency_key(self) -> bool: ...

    async def send(self, outbound: Outbound) -> Receipt: ...


MAX_BODY_KEPT = 2000
# 408 and 429 ask the caller to come back later; every other 4xx is final.
RETRYABLE_CLIENT_ERRORS = frozenset({408, 429})


def receipt_or_raise(response: httpx.Response, provider: str) -> Receipt:
    """An HTTP provider's answer: a receipt for 2xx, otherwise the error that says retry or not."""
    answer: dict[str, Any] = {
        "status_code": response.status_code,
        "body": response.text[:MAX_BODY_KEPT],
    }
    if response.is_success:
        return Receipt(answer)
    if "retry-after" in response.headers:
        answer["retry_after"] = response.headers["retry-after"]
    message = f"{provider} answered {response.status_code}: {answer['body']}"
    if response.status_code >= 500 or response.status_code in RETRYABLE_CLIENT_ERRORS:
        raise ProviderUnavailable(message, response=answer)
    raise ProviderRejected(message, response=answer)
