"""Sender health: a verdict on each WhatsApp number and SMS sender, from the provider's
quality rating where it gives one and from Nudge's own receipts of the last days.

The rule (``judge``), the worst of what the rating and the receipts say:

- ``bad``: WhatsApp rates the number RED, or at least 10% of its sends failed or were
  undelivered.
- ``medium``: WhatsApp rates it YELLOW, or at least 3% of its sends failed or were
  undelivered.
- ``good`` otherwise.

A rate needs at least 20 sends in the window to say anything: 1 failure in 5 sends is a
wrong number, not a sender in trouble, so a smaller sender is not made ``medium`` by its
receipts (a reason says there are too few sends to judge). It can still be ``bad`` by them:
with fewer than 20 sends the failures are counted against 20, so 2 or more failures are
already the 10% a larger sender would need, and a new number whose every send fails is
not shown as ``good`` for want of volume. Sends the provider refused at once (never left)
are left out of the rates: they say the configuration or recipient is wrong, not how the
carriers and WhatsApp treat the sender, and a reason counts them.

WhatsApp's UNKNOWN rating (a number not yet rated) and a rating that cannot be read (the
provider down or slow: each call has ``RATING_TIMEOUT_SECONDS``) leave the verdict to the
receipts alone; the request never fails for it. The messaging limit tier is shown, not
judged: it is the number's allowance of new conversations a day, its volume, not its health.
Twilio reports no rating for SMS senders, so theirs comes from the receipts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.messaging.channels.base import ChannelError
from nudge.messaging.channels.whatsapp import phone_number_health
from nudge.models.channels import WhatsAppConfig
from nudge.models.sender_health import Health, SendCounts, SenderHealth
from nudge.models.tables import Channel, utcnow
from nudge.security import SecretBox
from nudge.store.directory import channel_credentials
from nudge.store.sender_stats import provider_channels, send_counts

WINDOW_DAYS = 7
MIN_SENDS = 20
BAD_FAILURE_RATE = 0.10
MEDIUM_FAILURE_RATE = 0.03
# The whole wait for ratings, queueing included: a slow provider delays the answer this
# much at most, all numbers being asked at once.
RATING_TIMEOUT_SECONDS = 3.0
MAX_CONCURRENT_RATINGS = 10
# Provider text kept, in case a misbehaving endpoint answers a novel.
MAX_RATING_LENGTH = 40
MAX_ERROR_LENGTH = 300

_SEVERITY: dict[Health, int] = {"good": 0, "medium": 1, "bad": 2}
_RATED: dict[str, tuple[Health, str]] = {
    "GREEN": ("good", "WhatsApp rates the number's quality GREEN (high)"),
    "YELLOW": ("medium", "WhatsApp rates the number's quality YELLOW (medium): watch it"),
    "RED": ("bad", "WhatsApp rates the number's quality RED (low): its limits may be lowered"),
}


@dataclass(frozen=True)
class Sender:
    """A WhatsApp or SMS channel with its receipts counted."""

    channel: str
    type: str
    counts: SendCounts
    whatsapp: WhatsAppConfig | None = None
    config_error: str | None = None


@dataclass(frozen=True)
class Rating:
    """What the provider says of the number; all None for SMS."""

    quality_rating: str | None = None
    messaging_limit_tier: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Verdict:
    health: Health
    reasons: list[str]


# --- the senders and their receipts ---------------------------------------------------------


async def read_senders(
    session: AsyncSession,
    tenant_id: str,
    box: SecretBox,
    *,
    window_days: int = WINDOW_DAYS,
    now: datetime | None = None,
) -> list[Sender]:
    """The tenant's senders with their receipts of the last ``window_days``: all the reading
    there is, so the caller can end its transaction before the providers are asked."""
    channels = await provider_channels(session, tenant_id)
    since = (now or utcnow()) - timedelta(days=window_days)
    counts = await send_counts(session, tenant_id, [c.slug for c in channels], since)
    return [_sender(channel, counts[channel.slug], box) for channel in channels]


def _sender(channel: Channel, counts: SendCounts, box: SecretBox) -> Sender:
    if channel.type != "whatsapp":
        return Sender(channel.slug, channel.type, counts)
    try:
        config = WhatsAppConfig.model_validate(
            {**channel.config, **channel_credentials(channel, box)}
        )
    except ValidationError:
        # Never the details: they could quote a credential.
        error = "the channel's configuration is incomplete: set it again"
        return Sender(channel.slug, channel.type, counts, config_error=error)
    return Sender(channel.slug, channel.type, counts, whatsapp=config)


# --- the providers' ratings -------------------------------------------------------------------


async def fetch_ratings(senders: Iterable[Sender], http: httpx.AsyncClient) -> dict[str, Rating]:
    """The WhatsApp numbers' ratings by channel, asked all at once; a number that cannot be
    rated has its ``error`` instead. SMS senders are not asked (Twilio has no rating)."""
    whatsapp = [s for s in senders if s.type == "whatsapp"]
    limit = asyncio.Semaphore(MAX_CONCURRENT_RATINGS)
    ratings = await asyncio.gather(*(_rating(s, http, limit) for s in whatsapp))
    return {s.channel: rating for s, rating in zip(whatsapp, ratings, strict=True)}


async def _rating(sender: Sender, http: httpx.AsyncClient, limit: asyncio.Semaphore) -> Rating:
    if sender.whatsapp is None:
        return Rating(error=sender.config_error)
    try:
        async with asyncio.timeout(RATING_TIMEOUT_SECONDS), limit:
            answer = await phone_number_health(sender.whatsapp, http)
    except TimeoutError:
        return Rating(error=f"WhatsApp did not answer within {RATING_TIMEOUT_SECONDS:g} s")
    except (ChannelError, httpx.HTTPError) as exc:
        # Graph's message, already without the token (and egress refusals, as a rejection).
        return Rating(error=_clip(str(exc), MAX_ERROR_LENGTH))
    return Rating(
        quality_rating=_clip(answer.get("quality_rating"), MAX_RATING_LENGTH),
        messaging_limit_tier=_clip(answer.get("messaging_limit_tier"), MAX_RATING_LENGTH),
    )


def _clip(text: str | None, length: int) -> str | None:
    if text is None:
        return None
    return text if len(text) <= length else text[: length - 1] + "…"


# --- the verdict ------------------------------------------------------------------------------


def judge(channel_type: str, rating: Rating, counts: SendCounts, window_days: int) -> Verdict:
    """The health and its reasons, the deciding one first (see the module's docstring)."""
    rated = _rating_finding(channel_type, rating)
    receipts = _receipts_finding(counts, window_days)
    # A rating the provider gave speaks before the receipts; the lack of one is only a note.
    findings = [rated, receipts] if _has_rating(channel_type, rating) else [receipts, rated]
    if counts.refused:
        findings.append(
            (
                "good",
                f"{counts.refused} sends were refused by the provider at once and are not in"
                " the rates: check the channel's configuration and the recipients",
            )
        )
    # sorted() keeps the order of equals.
    ranked = sorted(findings, key=lambda finding: -_SEVERITY[finding[0]])
    return Verdict(health=ranked[0][0], reasons=[reason for _, reason in ranked])


def _has_rating(channel_type: str, rating: Rating) -> bool:
    return channel_type == "whatsapp" and rating.error is None and _rated(rating) is not None


def _rated(rating: Rating) -> tuple[Health, str] | None:
    return _RATED.get((rating.quality_rating or "").upper())


def _rating_finding(channel_type: str, rating: Rating) -> tuple[Health, str]:
    if channel_type != "whatsapp":
        return "good", "the SMS provider gives no quality rating: judged by receipts alone"
    if rating.error is not None:
        return "good", f"no quality rating ({rating.error}): judged by receipts alone"
    rated = _rated(rating)
    if rated is not None:
        return rated
    shown = rating.quality_rating or "none given"
    return "good", f"WhatsApp has not rated the number yet ({shown}): judged by receipts alone"


def _receipts_finding(counts: SendCounts, window_days: int) -> tuple[Health, str]:
    period = f"in {window_days} days"
    failures = counts.failures
    if counts.sent < MIN_SENDS:
        if failures / MIN_SENDS >= BAD_FAILURE_RATE:
            return "bad", (
                f"{failures} of {counts.sent} sends {period} failed or were undelivered:"
                f" already {_percent(BAD_FAILURE_RATE)} of the {MIN_SENDS} sends a rate needs"
            )
        failed = f", {failures} failed or undelivered" if failures else ""
        return "good", (
            f"too few sends to judge by receipts: {counts.sent} {period}{failed}"
            f" (a rate needs {MIN_SENDS})"
        )
    rate = failures / counts.sent
    figures = f"{_percent(rate)} of {counts.sent} sends {period} failed or were undelivered"
    if rate >= BAD_FAILURE_RATE:
        return "bad", f"{figures} (bad from {_percent(BAD_FAILURE_RATE)})"
    if rate >= MEDIUM_FAILURE_RATE:
        return "medium", f"{figures} (medium from {_percent(MEDIUM_FAILURE_RATE)})"
    return "good", f"{figures} (under {_percent(MEDIUM_FAILURE_RATE)})"


def _percent(rate: float) -> str:
    return f"{rate * 100:.1f}%".replace(".0%", "%")


# --- all together -----------------------------------------------------------------------------


def sender_health(sender: Sender, rating: Rating, window_days: int) -> SenderHealth:
    verdict = judge(sender.type, rating, sender.counts, window_days)
    counts = sender.counts
    return SenderHealth.model_validate(
        {
            "channel": sender.channel,
            "type": sender.type,
            "health": verdict.health,
            "reasons": verdict.reasons,
            "quality_rating": rating.quality_rating,
            "messaging_limit_tier": rating.messaging_limit_tier,
            "rating_error": rating.error,
            "window_days": window_days,
            **counts.model_dump(),
            "failure_rate": counts.failure_rate,
            "delivery_rate": counts.delivery_rate,
        }
    )


async def senders_health(
    senders: Sequence[Sender], http: httpx.AsyncClient, *, window_days: int = WINDOW_DAYS
) -> list[SenderHealth]:
    """Each sender's health, in the order given; the providers are asked concurrently."""
    ratings = await fetch_ratings(senders, http)
    return [sender_health(s, ratings.get(s.channel, Rating()), window_days) for s in senders]
