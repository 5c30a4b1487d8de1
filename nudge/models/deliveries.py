"""Deliveries as operators see them: one send to one contact on one channel."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

DeliveryStatus = Literal[
    "sending", "retrying", "sent", "delivered", "read", "failed", "undelivered", "unknown"
]


class ResendPublic(BaseModel):
    id: str
    status: DeliveryStatus


class ReceiptPublic(BaseModel):
    """One word from the provider on the message, as it came."""

    status: str = Field(description="queued, sent, delivered, read, failed or undelivered")
    at: datetime
    error_code: str | None = None
    error: str | None = None


class DeliveryState(BaseModel):
    """Where one send stands: the provider's receipts move it `sent` → `delivered` →
    `read`, or to `failed` / `undelivered`, never backwards."""

    id: str
    channel: str
    status: DeliveryStatus = Field(
        description="`unknown`: a try may have reached a provider that cannot drop a copy;"
        " it is not sent again unless an operator resends it."
    )
    provider_message_id: str | None = Field(
        default=None, description="The provider's id (a WhatsApp `wamid`, a Twilio sid)."
    )
    error: str | None
    error_code: str | None = Field(default=None, description="The provider's error code.")
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None = None
    read_at: datetime | None = None
    failed_at: datetime | None = None
    replied_at: datetime | None = Field(
        default=None,
        description="When the contact first wrote back on this channel within 24 hours.",
    )
    segments: int | None = Field(default=None, description="SMS: the segments billed.")
    receipts: list[ReceiptPublic] = []
    fallbacks: list[DeliveryState] = Field(
        default=[],
        description="The tries on the fallback channels after this one, in order.",
    )


class DeliveryPublic(DeliveryState):
    idempotency_key: str = Field(description="The same for every try of this send.")
    contact_id: str = Field(description="The contact's external id.")
    tries: int
    resend: ResendPublic | None = Field(
        default=None, description="The operator's resend of this delivery, once asked for."
    )


class ResendAccepted(BaseModel):
    delivery_id: str
    status: Literal["resending"] = "resending"
    workflow_id: str
