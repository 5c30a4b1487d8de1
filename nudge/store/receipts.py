"""Delivery receipts: what providers say became of a message, applied to its delivery.

Every receipt is kept once (a provider's retry of a callback changes nothing) and moves
its delivery forward only: `sent` → `delivered` → `read`, or to `failed` / `undelivered`
from `sent` or before. A receipt that names no known message yet is kept unmatched: the
callback can beat the storing of the provider's answer to the send, and is applied when
that answer is stored (``apply_waiting``) or by the relay's sweep (``apply_unmatched``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import func

from nudge.models.tables import Delivery, DeliveryReceipt, Message, new_id, utcnow

# What each receipt may move a delivery on from.
_BEFORE_SENT = ("sending", "retrying", "unknown")
_MOVES_FROM: dict[str, tuple[str, ...]] = {
    "sent": _BEFORE_SENT,
    "delivered": (*_BEFORE_SENT, "sent"),
    "read": (*_BEFORE_SENT, "sent", "delivered"),
    "failed": (*_BEFORE_SENT, "sent"),
    "undelivered": (*_BEFORE_SENT, "sent"),
}
# A reply counts for the newest message the contact got on the channel this recently.
REPLY_WINDOW = timedelta(hours=24)
# Unmatched receipts are kept this long (a message sent through another system, say).
UNMATCHED_KEPT = timedelta(days=7)


async def record_receipt(
    session: AsyncSession,
    *,
    tenant_id: str,
    channel: str,
    provider_message_id: str,
    status: str,
    at: datetime,
    error_code: str | None = None,
    error: str | None = None,
) -> Delivery | None:
    """Keep the receipt (once) and apply it to its delivery; the delivery, or None when no
    delivery has that message id (yet)."""
    delivery = await _delivery_of(session, tenant_id, channel, provider_message_id)
    await _insert_once(
        session,
        tenant_id=tenant_id,
        channel=channel,
        provider_message_id=provider_message_id,
        status=status,
        at=at,
        error_code=error_code,
        error=error,
        delivery_id=delivery.id if delivery else None,
    )
    if delivery is None:
        return None
    await apply(session, delivery.id, status, at, error_code, error)
    return delivery


async def record_own_receipt(
    session: AsyncSession,
    delivery: Delivery,
    status: str,
    at: datetime,
    error_code: str | None = None,
    error: str | None = None,
) -> None:
    """A receipt for a delivery found by its idempotency key (webhook-channel receivers)."""
    await _insert_once(
        session,
        tenant_id=delivery.tenant_id,
        channel=delivery.channel,
        provider_message_id=delivery.provider_message_id or f"key:{delivery.idempotency_key}",
        status=status,
        at=at,
        error_code=error_code,
        error=error,
        delivery_id=delivery.id,
    )
    await apply(session, delivery.id, status, at, error_code, error)


async def apply(
    session: AsyncSession,
    delivery_id: str,
    status: str,
    at: datetime,
    error_code: str | None = None,
    error: str | None = None,
) -> bool:
    """Move the delivery on to ``status`` if that is forward; its times are filled either
    way (a `read` that beat its `delivered` still says when it was delivered)."""
    if status == "queued":
        return False
    moved = await _update(
        session,
        and_(Delivery.id == delivery_id, Delivery.status.in_(_MOVES_FROM[status])),
        status=status,
        **_times(status, at),
        **_failure(status, error_code, error),
    )
    if not moved and status in ("sent", "delivered", "read"):
        await _fill_times(session, delivery_id, status, at)
    return moved


async def apply_waiting(session: AsyncSession, delivery: Delivery) -> None:
    """Receipts that arrived before the delivery knew its provider message id."""
    waiting = await session.execute(
        select(DeliveryReceipt)
        .where(
            DeliveryReceipt.tenant_id == delivery.tenant_id,
            DeliveryReceipt.channel == delivery.channel,
            DeliveryReceipt.provider_message_id == delivery.provider_message_id,
            DeliveryReceipt.delivery_id.is_(None),
        )
        .order_by(DeliveryReceipt.at)
    )
    for receipt in waiting.scalars():
        receipt.delivery_id = delivery.id
        await apply(
            session, delivery.id, receipt.status, receipt.at, receipt.error_code, receipt.error
        )
    await session.flush()


async def apply_unmatched(session: AsyncSession, limit: int = 500) -> int:
    """Match unmatched receipts whose message id a delivery now has; drop old ones.
    The count applied."""
    rows = await session.execute(
        select(DeliveryReceipt, Delivery.id)
        .join(
            Delivery,
            and_(
                Delivery.tenant_id == DeliveryReceipt.tenant_id,
                Delivery.channel == DeliveryReceipt.channel,
                Delivery.provider_message_id == DeliveryReceipt.provider_message_id,
            ),
        )
        .where(DeliveryReceipt.delivery_id.is_(None))
        .order_by(DeliveryReceipt.at)
        .limit(limit)
    )
    applied = 0
    for receipt, delivery_id in rows:
        receipt.delivery_id = delivery_id
        await apply(
            session, delivery_id, receipt.status, receipt.at, receipt.error_code, receipt.error
        )
        applied += 1
    await session.execute(
        delete(DeliveryReceipt).where(
            DeliveryReceipt.delivery_id.is_(None),
            DeliveryReceipt.created_at < utcnow() - UNMATCHED_KEPT,
        )
    )
    return applied


async def receipts_of(session: AsyncSession, delivery_ids: Iterable[str]) -> list[DeliveryReceipt]:
    """Every receipt of these deliveries, oldest first."""
    ids = list(delivery_ids)
    if not ids:
        return []
    rows = await session.execute(
        select(DeliveryReceipt)
        .where(DeliveryReceipt.delivery_id.in_(ids))
        .order_by(DeliveryReceipt.at, DeliveryReceipt.created_at)
    )
    return list(rows.scalars())


async def attribute_reply(
    session: AsyncSession, contact_id: str, channel: str, at: datetime
) -> str | None:
    """Mark the newest delivery to the contact on the channel, within 24 hours, as replied
    to (once); its id, or None."""
    newest = (
        await session.execute(
            select(Delivery.id, Delivery.replied_at)
            .where(
                Delivery.contact_id == contact_id,
                Delivery.channel == channel,
                Delivery.created_at >= at - REPLY_WINDOW,
                Delivery.created_at <= at,
                Delivery.status.in_(("sent", "delivered", "read")),
            )
            .order_by(Delivery.created_at.desc(), Delivery.id.desc())
            .limit(1)
        )
    ).first()
    if newest is None or newest.replied_at is not None:
        return None
    await _update(
        session, and_(Delivery.id == newest.id, Delivery.replied_at.is_(None)), replied_at=at
    )
    return str(newest.id)


async def last_incoming_at(session: AsyncSession, contact_id: str, channel: str) -> datetime | None:
    """When the contact last wrote on the channel (WhatsApp's customer-service window)."""
    found = await session.execute(
        select(func.max(Message.at)).where(
            Message.contact_id == contact_id,
            Message.channel == channel,
            Message.direction == "incoming",
        )
    )
    value: datetime | None = found.scalar_one_or_none()
    return value


def _times(status: str, at: datetime) -> dict[str, Any]:
    if status == "sent":
        return {"sent_at": func.coalesce(Delivery.sent_at, at), "leased_until": None}
    if status == "delivered":
        return {
            "sent_at": func.coalesce(Delivery.sent_at, at),
            "delivered_at": func.coalesce(Delivery.delivered_at, at),
            "leased_until": None,
        }
    if status == "read":
        return {
            "sent_at": func.coalesce(Delivery.sent_at, at),
            "delivered_at": func.coalesce(Delivery.delivered_at, at),
            "read_at": func.coalesce(Delivery.read_at, at),
            "leased_until": None,
        }
    return {"failed_at": at, "leased_until": None}


def _failure(status: str, error_code: str | None, error: str | None) -> dict[str, Any]:
    if status not in ("failed", "undelivered"):
        return {}
    return {"error_code": error_code, "error": error or f"the provider reports {status}"}


async def _fill_times(session: AsyncSession, delivery_id: str, status: str, at: datetime) -> None:
    """Times a late receipt still knows (never on a failed delivery)."""
    await _update(
        session,
        and_(Delivery.id == delivery_id, Delivery.status.in_(("sent", "delivered", "read"))),
        **{k: v for k, v in _times(status, at).items() if k != "leased_until"},
    )


async def delivery_of_message(
    session: AsyncSession, tenant_id: str, channel: str, provider_message_id: str
) -> Delivery | None:
    """The tenant's delivery the provider calls ``provider_message_id`` on ``channel``."""
    return await _delivery_of(session, tenant_id, channel, provider_message_id)


async def _delivery_of(
    session: AsyncSession, tenant_id: str, channel: str, provider_message_id: str
) -> Delivery | None:
    found = await session.execute(
        select(Delivery)
        .where(
            Delivery.tenant_id == tenant_id,
            Delivery.channel == channel,
            Delivery.provider_message_id == provider_message_id,
        )
        .limit(1)
    )
    return found.scalar_one_or_none()


async def _insert_once(session: AsyncSession, **values: Any) -> None:
    """Insert the receipt unless the same one (message, status) is kept already."""
    now = utcnow()
    row = {"id": new_id(), "created_at": now, "updated_at": now, **values}
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(DeliveryReceipt).values(**row).on_conflict_do_nothing()
    await session.execute(statement)


async def _update(session: AsyncSession, condition: Any, **values: Any) -> bool:
    values.setdefault("updated_at", utcnow())
    result = await session.execute(
        update(Delivery)
        .where(condition)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    return bool(result.rowcount)
