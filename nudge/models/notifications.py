"""Individual notifications: one message to one contact."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nudge.models.channels import CHANNEL_SLUG, LAST_USED
from nudge.models.deliveries import DeliveryState
from nudge.models.directory import EXTERNAL_ID
from nudge.models.messages import MessageTemplate
from nudge.models.template_context import NOTIFICATION_NAMES, unknown_names
from nudge.models.validation import located_errors

NotificationStatus = Literal["queued", "sent", "failed", "unknown"]


class NotificationCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "contact_id": "u1",
                    "channel": "last_used",
                    "message": {"kind": "text", "text": "Hello {{ contact.name }}"},
                }
            ]
        },
    )

    contact_id: EXTERNAL_ID = Field(description="The contact's external id.")
    channel: str = Field(
        pattern=f"{CHANNEL_SLUG}|^{LAST_USED}$",
        description="A channel id, or `last_used` for the channel the contact last wrote from.",
    )
    message: MessageTemplate = Field(description="Jinja2 templates; `contact` is in the context.")

    @model_validator(mode="after")
    def _known_names(self) -> NotificationCreate:
        problems = unknown_names(self.message, NOTIFICATION_NAMES)
        if problems:
            raise located_errors(type(self).__name__, problems)
        return self


class NotificationPublic(BaseModel):
    id: str
    contact_id: str
    channel: str = Field(description="As requested (a channel id or `last_used`).")
    status: NotificationStatus
    error: str | None = Field(description="Why it failed, with the provider's answer.")
    delivered_on: str | None = Field(description="The channel it was sent on.")
    delivery: DeliveryState | None = Field(
        default=None,
        description="The send and what the provider said of it since (delivered, read,"
        " failed, replied), with any fallback tries.",
    )
    message: dict[str, Any]
    workflow_id: str
    created_at: datetime
    updated_at: datetime
