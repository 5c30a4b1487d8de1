"""What Nudge's own receipts say of each sender: its deliveries of the last days, counted.

One grouped query per tenant, by channel and status, over the statuses that say what became
of a send. It reads `ix_deliveries_tenant_status (tenant_id, status, created_at)`: equality
on the tenant, a handful of statuses, a range of creation times.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.models.channels import PROVIDER_CHANNELS
from nudge.models.sender_health import SendCounts
from nudge.models.tables import Channel, Delivery

# The outcomes of sends; `sending`, `retrying` and `unknown` are no outcome yet.
COUNTED_STATUSES = ("sent", "delivered", "read", "failed", "undelivered")


async def provider_channels(session: AsyncSession, tenant_id: str) -> list[Channel]:
    """The tenant's WhatsApp and SMS channels (its senders), by slug."""
    rows = await session.scalars(
        select(Channel)
        .where(Channel.tenant_id == tenant_id, Channel.type.in_(sorted(PROVIDER_CHANNELS)))
        .order_by(Channel.slug)
    )
    return list(rows)


@dataclass
class _Tally:
    sent: int = 0
    delivered: int = 0
    read: int = 0
    failed: int = 0
    undelivered: int = 0
    replied: int = 0
    refused: int = 0

    def add(self, status: str, refused: bool, found: int, replied: int) -> None:
        if refused:
            # Failed before leaving: the provider refused it at the send.
            self.refused += found
            return
        self.sent += found
        self.replied += replied
        if status in ("delivered", "read"):
            self.delivered += found
        if status == "read":
            self.read += found
        if status == "failed":
            self.failed += found
        if status == "undelivered":
            self.undelivered += found

    def counts(self) -> SendCounts:
        return SendCounts(**vars(self))


async def send_counts(
    session: AsyncSession, tenant_id: str, slugs: Collection[str], since: datetime
) -> dict[str, SendCounts]:
    """Each channel's deliveries created from ``since`` on, by outcome (zeros for a channel
    without any)."""
    if not slugs:
        return {}
    # A failed delivery left when the provider took it (`sent_at`) or reported on it
    # (`failed_at`, set by receipts only); without either it was refused at the send.
    refused = case(
        (
            and_(
                Delivery.status == "failed",
                Delivery.sent_at.is_(None),
                Delivery.failed_at.is_(None),
            ),
            True,
        ),
        else_=False,
    ).label("refused")
    rows = await session.execute(
        select(
            Delivery.channel,
            Delivery.status,
            refused,
            func.count().label("found"),
            func.count(Delivery.replied_at).label("replied"),
        )
        .where(
            Delivery.tenant_id == tenant_id,
            Delivery.status.in_(COUNTED_STATUSES),
            Delivery.created_at >= since,
            Delivery.channel.in_(sorted(slugs)),
        )
        .group_by(Delivery.channel, Delivery.status, refused)
    )
    tallies = {slug: _Tally() for slug in slugs}
    for row in rows:
        tallies[row.channel].add(row.status, bool(row.refused), row.found, row.replied)
    return {slug: tally.counts() for slug, tally in tallies.items()}
