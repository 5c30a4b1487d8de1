"""Message metrics over a period, and a campaign's results row by row (its CSV export)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from nudge.models.campaigns import MessageMetricsRow

GroupBy = Literal["campaign", "template", "sender", "day"]


class MessageMetricsList(BaseModel):
    """The period's figures, one item per group. Only groups with deliveries are listed
    (a day without sends is absent, not zero). Items are in the order of their `key`, the
    null key last: deliveries of no campaign under `campaign`, or without a template name
    (sent before templates were stored) under `template`. The figures of every grouping add
    up to the same totals."""

    model_config = ConfigDict(populate_by_name=True)

    group_by: GroupBy
    start: datetime = Field(
        alias="from", description="The period's start (UTC), included: `from`, or its default."
    )
    end: datetime = Field(
        alias="to", description="The period's end (UTC), excluded: `to`, or its default."
    )
    items: list[MessageMetricsRow]


class CampaignResult(BaseModel):
    """One campaign row as sent: the CSV export's columns, in this order."""

    model_config = ConfigDict(frozen=True)

    line: int = Field(description="The row's line in the uploaded CSV (1 is the header).")
    recipient: str = Field(description="The contact's phone, or its external id.")
    channel: str
    status: str = Field(description="The row's: queued, sent, failed, unknown or skipped.")
    delivery_status: str | None = Field(description="Its delivery's state; null: none yet.")
    sent_at: datetime | None
    delivered_at: datetime | None
    read_at: datetime | None
    failed_at: datetime | None
    replied_at: datetime | None
    error: str | None = Field(description="The delivery's error, else the row's.")
