"""Sender health: how well each WhatsApp number and SMS sender is doing, and why."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Health = Literal["good", "medium", "bad"]


class SendCounts(BaseModel):
    """What became of the deliveries a sender made in a window, as a funnel: a read message
    was delivered, and a delivered one sent, so each figure includes those further on."""

    model_config = ConfigDict(frozen=True)

    sent: int = 0
    delivered: int = 0
    read: int = 0
    failed: int = 0
    undelivered: int = 0
    replied: int = 0
    refused: int = 0

    @property
    def failures(self) -> int:
        return self.failed + self.undelivered

    @property
    def failure_rate(self) -> float | None:
        return _rate(self.failures, self.sent)

    @property
    def delivery_rate(self) -> float | None:
        return _rate(self.delivered, self.sent)


def _rate(part: int, whole: int) -> float | None:
    # Four decimals: a percentage with two, the same in JSON and CSV.
    return round(part / whole, 4) if whole else None


class SenderHealth(BaseModel):
    """One sender's health. The CSV export has these fields as its columns, in this order."""

    channel: str = Field(description="The channel's id.")
    type: Literal["whatsapp", "sms"]
    health: Health = Field(
        description="`bad`: act now; `medium`: watch it; `good`: nothing to do (see `reasons`)."
    )
    reasons: list[str] = Field(description="Why, the one that decides the health first.")
    quality_rating: str | None = Field(
        description="WhatsApp's rating of the number: GREEN, YELLOW, RED or UNKNOWN (not yet"
        " rated); null for SMS, which has none, and when it could not be read."
    )
    messaging_limit_tier: str | None = Field(
        description="WhatsApp's limit of customers a day the number may start conversations"
        " with (TIER_250, TIER_1K, ..., TIER_UNLIMITED); shown, not judged."
    )
    rating_error: str | None = Field(
        description="Why the provider's rating could not be read; the health then comes from"
        " the receipts alone."
    )
    window_days: int = Field(description="The receipts counted are of sends made this recently.")
    sent: int = Field(description="Sends the provider took (all those below included).")
    delivered: int = Field(description="Delivered to the phone (read ones included).")
    read: int
    failed: int = Field(description="Taken by the provider, then reported failed.")
    undelivered: int = Field(description="Taken by the provider, then reported undelivered.")
    replied: int = Field(description="Answered by the contact within 24 hours.")
    refused: int = Field(
        description="Refused by the provider when sent (never left, not in the rates): a"
        " configuration or recipient problem rather than the sender's standing."
    )
    failure_rate: float | None = Field(
        description="(failed + undelivered) / sent, from 0 to 1; null without sends."
    )
    delivery_rate: float | None = Field(description="delivered / sent; null without sends.")


class SenderHealthList(BaseModel):
    """Every WhatsApp and SMS sender of the tenant, by channel id."""

    items: list[SenderHealth]
