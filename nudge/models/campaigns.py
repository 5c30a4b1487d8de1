"""Campaigns: one message to every row of a CSV, now or later, at once or gradually."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nudge.models.channels import CHANNEL_SLUG
from nudge.models.messages import MessageTemplate

CampaignStatus = Literal["scheduled", "running", "paused", "cancelled", "completed"]
RowStatus = Literal["queued", "sent", "failed", "unknown", "skipped"]
# What a row's templates see: `row.<column>` and the contact.
CAMPAIGN_NAMES = frozenset({"row", "contact", "recipient", "campaign"})
SEPARATORS = (",", ";", "|")
# Problems listed in a 422; the total is given beside them.
MAX_PROBLEMS = 100


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StartAt(_Strict):
    at: datetime = Field(description="A local date-time, e.g. `2026-12-02T09:00:00`.")
    timezone: Annotated[str, Field(max_length=64)] = Field(
        description="The IANA zone `at` is in, e.g. `America/Sao_Paulo`."
    )

    @field_validator("timezone")
    @classmethod
    def _zone_exists(cls, zone: str) -> str:
        if zone not in available_timezones():
            raise ValueError(f"unknown time zone {zone!r}; use an IANA name like Europe/Madrid")
        return zone

    def utc(self) -> datetime:
        """The moment, as UTC (an `at` with its own offset keeps it)."""
        try:
            zone = ZoneInfo(self.timezone)
        except ZoneInfoNotFoundError:  # checked above; kept for type checkers
            raise ValueError(self.timezone) from None
        local = self.at if self.at.tzinfo is not None else self.at.replace(tzinfo=zone)
        return local.astimezone(ZoneInfo("UTC"))


class AllAtOnce(_Strict):
    type: Literal["all_at_once"]


class Gradual(_Strict):
    type: Literal["gradual"]
    batch_size: Annotated[int, Field(ge=1, le=100_000)]
    every_minutes: Annotated[int, Field(ge=1, le=10_080)]


class Rate(_Strict):
    type: Literal["rate"]
    per_second: Annotated[float, Field(gt=0, le=1_000)] = Field(
        description="Sends per second; fractions allowed (0.5: one every two seconds)."
    )


Mode = Annotated[AllAtOnce | Gradual | Rate, Field(discriminator="type")]


class CampaignCreate(_Strict):
    """The `campaign` part of `POST /v1/campaigns`; the CSV is the `file` part."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Renewals December",
                    "separator": ";",
                    "recipient_column": "phone",
                    "sender_column": None,
                    "channel": "wa-main",
                    "message": {
                        "kind": "whatsapp_template",
                        "template": {
                            "name": "renewal_reminder",
                            "language": "es",
                            "body": ["{{ row.name }}", "{{ row.due_date }}"],
                        },
                    },
                    "start": {"at": "2026-12-02T09:00:00", "timezone": "America/Sao_Paulo"},
                    "mode": {"type": "gradual", "batch_size": 500, "every_minutes": 10},
                }
            ]
        },
    )

    name: Annotated[str, Field(min_length=1, max_length=200)]
    separator: Literal[",", ";", "|"] = ","
    recipient_column: Annotated[str, Field(min_length=1, max_length=200)]
    recipient_kind: Literal["phone", "external_id"] = Field(
        default="phone",
        description="What the recipient column holds: phone numbers (unknown ones become"
        " contacts) or contacts' external ids (which must exist).",
    )
    sender_column: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        default=None,
        description="The column naming each row's channel (bulk from several numbers).",
    )
    channel: Annotated[str, Field(pattern=CHANNEL_SLUG)] | None = Field(
        default=None, description="The channel every row is sent on, without `sender_column`."
    )
    message: MessageTemplate = Field(
        description="Any Nudge message or a WhatsApp template; templates see `row.<column>`"
        " and `contact.*`."
    )
    start: Literal["now"] | StartAt = "now"
    mode: Mode = Field(default_factory=lambda: AllAtOnce(type="all_at_once"))

    @model_validator(mode="after")
    def _one_sender(self) -> CampaignCreate:
        if (self.channel is None) == (self.sender_column is None):
            raise ValueError("give exactly one of `channel` and `sender_column`")
        return self

    def start_utc(self) -> datetime | None:
        return None if self.start == "now" else self.start.utc()


class CampaignEdit(_Strict):
    """Changes to a campaign that has not started; what is left out stays."""

    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    start: Literal["now"] | StartAt | None = None
    mode: Mode | None = None


class CsvProblem(BaseModel):
    line: int = Field(description="The CSV line (1 is the header).")
    column: str | None
    reason: str


class CsvProblems(BaseModel):
    """A CSV that cannot be sent: nothing was stored."""

    detail: str
    problems: list[CsvProblem] = Field(description=f"The first {MAX_PROBLEMS}.")
    total: int = Field(description="How many problems the whole file has.")


class CampaignProgress(BaseModel):
    total: int
    queued: int
    sent: int
    failed: int
    unknown: int = Field(description="Sends whose outcome is unknown (never sent again).")
    skipped: int = Field(description="Rows not sent: the campaign was cancelled first.")
    duplicates: int = Field(description="Rows whose recipient an earlier row already had.")
    rate_per_second: float | None = Field(description="Sends per second over the last minute.")
    expected_end: datetime | None


class CampaignPublic(BaseModel):
    id: str
    name: str
    status: CampaignStatus
    channel: str | None
    sender_column: str | None
    mode: dict[str, Any]
    start_at: datetime | None = Field(description="When it starts (UTC); null: at once.")
    progress: CampaignProgress
    workflow_id: str
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None


class CampaignMetrics(BaseModel):
    """Counted from stored delivery states (receipts move them), never estimated. Each
    message counts once, as its first try: fallback tries are not counted."""

    total: int = Field(description="Every message, in any state (sending and unknown too).")
    sent: int = Field(
        description="Those that left: sent, delivered, read, undelivered, and failed after the"
        " provider took them (not refused at the send)."
    )
    delivered: int = Field(description="Delivered or read.")
    read: int
    failed: int = Field(description="Failed or undelivered, refused at the send or later.")
    replied: int = Field(description="Answered by the contact on the channel within 24 hours.")
    reply_rate: float | None = Field(
        description="replied / delivered, to 4 decimals; null before any delivery."
    )


class MessageMetricsRow(CampaignMetrics):
    key: str | None = Field(description="The campaign, template, sender or day.")
