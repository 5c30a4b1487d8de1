"""Deliveries: the unique idempotency key that makes every send effectively once."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from nudge.models.tables import Delivery, Message, utcnow


async def claim_delivery(
    sessions: async_sessionmaker[AsyncSession],
    *,
    tenant_id: str,
    idempotency_key: str,
    contact_id: str,
    channel: str,
) -> Delivery:
    """The delivery for this key, created (and committed) before any provider is called."""
    async with sessions() as session:
        try:
            async with session.begin():
                delivery = Delivery(
                    tenant_id=tenant_id,
                    idempotency_key=idempotency_key,
                    contact_id=contact_id,
                    channel=channel,
                    status="sending",
                    tries=1,
                )
                session.add(delivery)
            return delivery
        except IntegrityError:
            pass
    async with sessions() as session, session.begin():
        existing = (
            await session.execute(
                select(Delivery).where(Delivery.idempotency_key == idempotency_key)
            )
        ).scalar_one()
        if existing.status != "sent":
            existing.tries += 1
        return existing


async def mark_sent(
    sessions: async_sessionmaker[AsyncSession], delivery_id: str, response: dict[str, Any]
) -> None:
    async with sessions() as session, session.begin():
        delivery = await session.get_one(Delivery, delivery_id)
        delivery.status = "sent"
        delivery.provider_response = response
        delivery.error = None
        delivery.sent_at = utcnow()


async def mark_not_sent(
    sessions: async_sessionmaker[AsyncSession],
    delivery_id: str,
    *,
    error: str,
    response: dict[str, Any],
    final: bool,
) -> None:
    """The provider did not take it: ``failed`` for good, or ``retrying`` (safe to send again)."""
    async with sessions() as session, session.begin():
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
