"""What contacts were told while a schedule was closed, and who asked to be told when it
opens: each once per closed period (the unique key makes it so, whatever retries)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.models.tables import ClosedReply, utcnow
from nudge.store.pagination import PageRequest, keyset_page

UNAVAILABLE = "unavailable"
SUBSCRIPTION = "subscription"
ABSENCE = "absence"


async def find_reply(
    session: AsyncSession, schedule_id: str, contact_id: str, kind: str, period: str
) -> ClosedReply | None:
    found = await session.execute(
        select(ClosedReply).where(
            ClosedReply.schedule_id == schedule_id,
            ClosedReply.contact_id == contact_id,
            ClosedReply.kind == kind,
            ClosedReply.period == period,
        )
    )
    return found.scalar_one_or_none()


async def add_reply_once(
    session: AsyncSession,
    *,
    tenant_id: str,
    schedule_id: str,
    contact_id: str,
    kind: str,
    period: str,
    channel: str,
) -> ClosedReply | None:
    """The new reply, or None when the contact already has one of this kind this period
    (in a savepoint: the caller's transaction goes on either way)."""
    if await find_reply(session, schedule_id, contact_id, kind, period) is not None:
        return None
    reply = ClosedReply(
        tenant_id=tenant_id,
        schedule_id=schedule_id,
        contact_id=contact_id,
        kind=kind,
        period=period,
        channel=channel,
    )
    try:
        async with session.begin_nested():
            session.add(reply)
            await session.flush()
    except IntegrityError:  # the same contact's other message, at the same moment
        return None
    return reply


async def waiting_subscriptions(
    session: AsyncSession, schedule_id: str, limit: int
) -> list[ClosedReply]:
    """Subscriptions not notified yet, oldest first."""
    rows = await session.execute(
        select(ClosedReply)
        .where(
            ClosedReply.schedule_id == schedule_id,
            ClosedReply.kind == SUBSCRIPTION,
            ClosedReply.notified_at.is_(None),
        )
        .order_by(ClosedReply.created_at, ClosedReply.id)
        .limit(limit)
    )
    return list(rows.scalars())


async def mark_notified(
    session: AsyncSession, reply_id: str, delivery_id: str | None, at: datetime | None = None
) -> None:
    await session.execute(
        update(ClosedReply)
        .where(ClosedReply.id == reply_id, ClosedReply.notified_at.is_(None))
        .values(notified_at=at or utcnow(), delivery_id=delivery_id, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )


async def replies_page(
    session: AsyncSession,
    tenant_id: str,
    page: PageRequest,
    *,
    schedule_id: str | None = None,
    contact_id: str | None = None,
    kind: str | None = None,
) -> tuple[list[ClosedReply], str | None]:
    """Replies newest first, of one schedule or one contact."""
    query = select(ClosedReply).where(ClosedReply.tenant_id == tenant_id)
    if schedule_id is not None:
        query = query.where(ClosedReply.schedule_id == schedule_id)
    if contact_id is not None:
        query = query.where(ClosedReply.contact_id == contact_id)
    if kind is not None:
        query = query.where(ClosedReply.kind == kind)
    rows, next_cursor = await keyset_page(
        session, query, ClosedReply.created_at, ClosedReply.id, page, descending=True
    )
    return [row[0] for row in rows], next_cursor
