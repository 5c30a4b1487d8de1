"""Events services report: messages in and out, assignments."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from nudge.models.channels import CHANNEL_SLUG
from nudge.models.directory import EXTERNAL_ID


class MessageEvent(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "contact_id": "ada",
                    "direction": "incoming",
                    "channel": "whatsapp",
                    "text": "Approved, thanks",
                    "message_id": "wamid.123",
                    "at": "2026-11-20T10:00:00Z",
                }
            ]
        },
    )

    contact_id: EXTERNAL_ID
    direction: Literal["incoming", "outgoing"]
    channel: Annotated[str, Field(pattern=CHANNEL_SLUG)]
    text: Annotated[str, Field(max_length=10_000)] = ""
    message_id: Annotated[
        str, Field(min_length=1, max_length=200, description="Makes the event idempotent.")
    ]
    at: datetime | None = Field(default=None, description="When it happened; default now.")


class EventAccepted(BaseModel):
    status: Literal["accepted", "duplicate"]
    message_id: str


class MessageEventAccepted(EventAccepted):
    journeys_started: list[str] = Field(
        default_factory=list, description="Journeys this message enrolled the contact in."
    )
    journeys_notified: list[str] = Field(
        default_factory=list, description="Journeys in progress for the contact that got it."
    )


MAX_BATCH = 500


class MessageEventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: Annotated[list[MessageEvent], Field(min_length=1, max_length=MAX_BATCH)] = Field(
        description=f"1 to {MAX_BATCH} messages, handled in this order."
    )


class MessageBatchAccepted(BaseModel):
    results: list[MessageEventAccepted] = Field(
        description="Each message's answer, in the order posted."
    )


class AssignmentEvent(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"contact_id": "ada", "assignee": "grace", "manual": True}]
        },
    )

    contact_id: EXTERNAL_ID
    assignee: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="The agent or queue the contact was assigned to."
    )
    manual: bool = Field(
        default=False, description="A person assigned them (the `manual_assignment` exit)."
    )
    event_id: Annotated[str | None, Field(min_length=1, max_length=200)] = Field(
        default=None,
        description="Makes the event idempotent: a retry with the same id completes what the"
        " first try left undone and is never acted on twice. Without it every post is a new"
        " assignment.",
    )


class AssignmentAccepted(BaseModel):
    status: Literal["accepted", "duplicate"] = "accepted"
    journeys_notified: list[str] = Field(description="Journeys in progress that got it.")


class ReceiptEvent(BaseModel):
    """What a webhook channel's receiver says became of a message Nudge posted to it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "idempotency_key": "notification:6f1c…",
                    "status": "delivered",
                    "at": "2026-12-01T10:00:05Z",
                }
            ]
        },
    )

    idempotency_key: Annotated[str, Field(min_length=1, max_length=500)] = Field(
        description="The `Idempotency-Key` header (and body field) of the POST Nudge made."
    )
    status: Literal["delivered", "read", "failed"]
    at: datetime | None = Field(default=None, description="When it happened; default now.")
    error: Annotated[str, Field(max_length=2_000)] | None = Field(
        default=None, description="Why it failed (with `failed`)."
    )
    error_code: Annotated[str, Field(max_length=40)] | None = None


class ReceiptAccepted(BaseModel):
    status: Literal["accepted", "unknown_message"] = Field(
        description="`unknown_message`: no delivery of this tenant has the key; nothing changed."
    )
    delivery_status: str | None = Field(
        default=None, description="The delivery's status after this receipt."
    )
