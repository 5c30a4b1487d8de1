"""Send windows: a follow-up or journey send that falls outside waits until it opens."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nudge.models.business_hours import BusinessHoursPut
from nudge.models.channels import CHANNEL_SLUG

Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WEEKDAYS: tuple[Weekday, ...] = (
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LocalHours(_Strict):
    """The same hours on the days given, in each recipient's own time zone."""

    days: Annotated[list[Weekday], Field(min_length=1, max_length=7)] = Field(
        default_factory=lambda: list(WEEKDAYS[:5])
    )
    hours: Annotated[str, Field(pattern=r"^[0-9]{2}:[0-9]{2}-[0-9]{2}:[0-9]{2}$")] = Field(
        description="`HH:MM-HH:MM`, e.g. `09:00-18:00`."
    )

    @field_validator("days")
    @classmethod
    def _distinct(cls, days: list[Weekday]) -> list[Weekday]:
        if len(set(days)) != len(days):
            raise ValueError("a day is named twice")
        return days

    @model_validator(mode="after")
    def _valid_hours(self) -> LocalHours:
        self.as_schedule("UTC")  # the business-hours rules (start before end, within 24:00)
        return self

    def as_schedule(self, timezone: str) -> BusinessHoursPut:
        week = {day: [self.hours] for day in self.days}
        return BusinessHoursPut.model_validate({"timezone": timezone, "week": week})


class SendWindow(_Strict):
    """Send only while a business-hours schedule is open, or within the recipient's hours
    (their contact `timezone`; UTC when they have none). Give exactly one."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"business_hours": "default"},
                {"recipient_local": {"days": ["monday", "friday"], "hours": "09:00-18:00"}},
            ]
        },
    )

    business_hours: Annotated[str, Field(pattern=CHANNEL_SLUG)] | None = None
    recipient_local: LocalHours | None = None

    @model_validator(mode="after")
    def _one(self) -> SendWindow:
        if (self.business_hours is None) == (self.recipient_local is None):
            raise ValueError("give exactly one of `business_hours` and `recipient_local`")
        return self
