"""Deliveries: the unique idempotency key that makes every send effectively once.

Like every store function these take a session and never commit: the caller owns the
transaction (claiming a key must be committed before any provider is called).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.models.tables import Delivery, Message, utcnow


async def add_delivery(
    session: AsyncSession, *, tenant_id: str, idempotency_key: str, contact_id: str, channel: str
) -> Delivery:
    """A new delivery, `sending` on its first try; ``IntegrityError`` when the key is taken."""
    delivery = Delivery(
        tenant_id=tenant_id,
        idempotency_key=idempotency_key,
        contact_id=contact_id,
        channel=channel,
        status="sending",
        tries=1,
    )
    session.add(delivery)
    await session.flush()
    return delivery


async def retry_delivery(session: AsyncSession, idempotency_key: str) -> Delivery:
    """The delivery that holds the key, with one more try counted unless it was sent."""
    existing = (
        await session.execute(select(Delivery).where(Delivery.idempotency_key == idempotency_key))
    ).scalar_one()
    if existing.status != "sent":
        existing.tries += 1
    return existing


async def mark_sent(session: AsyncSession, delivery_id: str, response: dict[str, Any]) -> None:
    delivery = await session.get_one(Delivery, delivery_id)
    delivery.status = "sent"
    delivery.provider_response = response
    delivery.error = None
    delivery.sent_at = utcnow()


async def mark_not_sent(
    session: AsyncSession,
    delivery_id: str,
    *,
    error: str,
    response: dict[str, Any],
    final: bool,
) -> None:
    """The provider did not take it: ``failed`` for good, or ``retrying`` (safe to send again)."""
    delivery = await session.get_one(Delivery, delivery_id)
    delivery.status = "failed" if final else "retrying"
    delivery.error = error
    delivery.provider_response = response


async def record_outgoing(session: AsyncSession, delivery: Delivery, message: Message) -> None:
    """Add the sent message to the history once, however often this is retried."""
    exists = await session.execute(select(Message.id).where(Message.delivery_id == delivery.id))
    if exists.first() is None:
        message.delivery_id = delivery.id
        session.add(message)
        await session.flush()


async def is_own_delivery(session: AsyncSession, tenant_id: str, idempotency_key: str) -> bool:
    """True when ``idempotency_key`` is the key of one of Nudge's own deliveries."""
    found = await session.execute(
        select(Delivery.id).where(
            Delivery.tenant_id == tenant_id, Delivery.idempotency_key == idempotency_key
        )
    )
    return found.first() is not None
