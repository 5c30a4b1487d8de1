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


class DeliveryPublic(BaseModel):
    id: str
    idempotency_key: str = Field(description="The same for every try of this send.")
    contact_id: str = Field(description="The contact's external id.")
    channel: str
    status: DeliveryStatus = Field(
        description="`unknown`: a try may have reached a provider that cannot drop a copy;"
        " it is not sent again unless an operator resends it."
    )
    tries: int
    error: str | None
    created_at: datetime
    sent_at: datetime | None
    resend: ResendPublic | None = Field(
        default=None, description="The operator's resend of this delivery, once asked for."
    )


class ResendAccepted(BaseModel):
    delivery_id: str
    status: Literal["resending"] = "resending"
    workflow_id: str
