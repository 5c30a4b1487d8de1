"""Figures for `/metrics` that only the database knows: deliveries by channel type and status.

Read at scrape time, so every API process reports the same, exact figure whichever process
sent. One grouped count over `deliveries` (joined to `channels` for the type, by the
tenant's channel name): a scan of the table per scrape, cheap at a scrape every 15 s or more.
"""

from __future__ import annotations

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.models.tables import Channel, Delivery

# Every status a delivery can be in, reported at 0 for each configured channel type when no
# row has it, so an alert on `unknown` has a series to watch before the first one.
DELIVERY_STATUSES = ("sending", "retrying", "sent", "failed", "unknown")
# The type of deliveries whose channel has been deleted since.
DELETED_CHANNEL = "deleted"


async def delivery_counts(session: AsyncSession) -> dict[tuple[str, str], int]:
    """(channel type, status) -> rows of `deliveries`; 0 for the statuses no row has.

    A channel is labelled by its type (`log`, `webhook`, `email`, `slack`), never by the name a
    tenant gave it: names are the tenants' own and unbounded in number. A delivery whose
    channel no longer exists counts under ``DELETED_CHANNEL``; one whose channel was deleted
    and made again under the same name, with another type, under the new type.
    """
    rows = await session.execute(
        select(Channel.type, Delivery.status, func.count())
        .select_from(Delivery)
        .outerjoin(
            Channel, and_(Channel.tenant_id == Delivery.tenant_id, Channel.slug == Delivery.channel)
        )
        .group_by(Channel.type, Delivery.status)
    )
    counts: dict[tuple[str, str], int] = {}
    for channel_type, status, found in rows:
        key = (channel_type or DELETED_CHANNEL, status)
        counts[key] = counts.get(key, 0) + found
    configured = set(await session.scalars(select(Channel.type).distinct()))
    for channel_type in configured | {channel for channel, _ in counts}:
        for status in DELIVERY_STATUSES:
            counts.setdefault((channel_type, status), 0)
    return counts
