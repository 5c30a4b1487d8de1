"""Deliveries: the unique idempotency key that makes every send effectively once.

Like every store function these take a session and never commit: the caller owns the
transaction (claiming a key must be committed before any provider is called).

Every change of status is a conditional UPDATE, so two tries of one send (a retry that
started while the first was still in flight, a worker that woke up late) cannot undo each
other: a late failure never overwrites `sent`, and only one try at a time holds the lease
that allows calling the provider.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.models.tables import Delivery, Message, utcnow
from nudge.store.pagination import PageRequest, keyset_page

# The provider took it (or said what became of it): nothing may send it again or mark it
# otherwise, but for a receipt moving it on.
DELIVERED_STATES = frozenset({"sent", "delivered", "read"})
# No try sends it again on its own: `failed` for good, `unknown` until an operator says so.
FINAL_STATES = DELIVERED_STATES | {"failed", "undelivered", "unknown"}
# An operator's resend of a delivery is the delivery keyed `<its key>#resend`.
RESEND_SUFFIX = "#resend"


@dataclass(frozen=True)
class Claim:
    """What claiming a key found: the delivery, and what the try before this one left."""

    delivery: Delivery
    # True when this try holds the lease and may call the provider (if nothing is final).
    leased: bool
    # The status before this claim; `sending` on a retry means an earlier try called the
    # provider (or was about to) and its outcome was never recorded.
    previous_status: str | None
    lease_ends: datetime | None = None

    @property
    def outcome_unknown(self) -> bool:
        return self.leased and self.previous_status == "sending"


async def add_delivery(
    session: AsyncSession,
    *,
    tenant_id: str,
    idempotency_key: str,
    contact_id: str,
    channel: str,
    lease: timedelta,
    outbound: dict[str, Any] | None = None,
    fallback_of: str | None = None,
    belongs_to: str | None = None,
    template: str | None = None,
) -> Delivery:
    """A new delivery, `sending` on its first try and leased to it; ``IntegrityError`` when
    the key is taken."""
    now = utcnow()
    delivery = Delivery(
        tenant_id=tenant_id,
        idempotency_key=idempotency_key,
        contact_id=contact_id,
        channel=channel,
        status="sending",
        tries=1,
        leased_until=now + lease,
        outbound=outbound,
        fallback_of=fallback_of,
        belongs_to=belongs_to,
        template=template,
        updated_at=now,
    )
    session.add(delivery)
    await session.flush()
    return delivery


async def claim_again(session: AsyncSession, idempotency_key: str, lease: timedelta) -> Claim:
    """A retry's claim of a key an earlier try added.

    Takes the lease (and counts a try) only when nothing is final and no other try holds a
    live lease; the UPDATE is conditional on the row being as it was read, so of two
    retries racing for it exactly one wins."""
    existing = (
        await session.execute(select(Delivery).where(Delivery.idempotency_key == idempotency_key))
    ).scalar_one()
    now = utcnow()
    if existing.status in FINAL_STATES:
        return Claim(existing, leased=False, previous_status=existing.status)
    if existing.leased_until is not None and existing.leased_until > now:
        return Claim(
            existing,
            leased=False,
            previous_status=existing.status,
            lease_ends=existing.leased_until,
        )
    previous = existing.status
    until = now + lease
    won = await _update(
        session,
        and_(
            Delivery.id == existing.id,
            Delivery.status == previous,
            Delivery.tries == existing.tries,
            or_(Delivery.leased_until.is_(None), Delivery.leased_until <= now),
        ),
        status="sending",
        tries=existing.tries + 1,
        leased_until=until,
        updated_at=now,
    )
    await session.refresh(existing)
    if not won:
        return Claim(
            existing,
            leased=False,
            previous_status=existing.status,
            lease_ends=existing.leased_until,
        )
    return Claim(existing, leased=True, previous_status=previous)


async def renew_lease(
    session: AsyncSession, delivery_id: str, tries: int, lease: timedelta
) -> bool:
    """The try still sending (the ``tries``-th) holds on to its lease while its provider
    takes its time; False when it lost it."""
    now = utcnow()
    return await _update(
        session,
        and_(Delivery.id == delivery_id, Delivery.status == "sending", Delivery.tries == tries),
        leased_until=now + lease,
        updated_at=now,
    )


def _in_flight(delivery: Delivery) -> Claim:
    return Claim(
        delivery, leased=False, previous_status=delivery.status, lease_ends=delivery.leased_until
    )


async def mark_sent(
    session: AsyncSession,
    delivery_id: str,
    response: dict[str, Any],
    *,
    provider_message_id: str | None = None,
    segments: int | None = None,
) -> bool:
    """The provider took it. Also over `unknown`: a late answer is better knowledge.
    False when it was already sent (or further along)."""
    now = utcnow()
    return await _update(
        session,
        and_(Delivery.id == delivery_id, Delivery.status.not_in(DELIVERED_STATES)),
        status="sent",
        provider_response=response,
        provider_message_id=provider_message_id,
        segments=segments,
        error=None,
        sent_at=now,
        leased_until=None,
        updated_at=now,
    )


async def mark_not_sent(
    session: AsyncSession,
    delivery_id: str,
    *,
    error: str,
    response: dict[str, Any],
    final: bool,
) -> bool:
    """The provider did not take it: ``failed`` for good, or ``retrying`` (safe to send
    again). Only a delivery still being sent changes: never one sent, failed or unknown."""
    return await _update(
        session,
        and_(Delivery.id == delivery_id, Delivery.status.in_(("sending", "retrying"))),
        status="failed" if final else "retrying",
        error=error,
        provider_response=response,
        leased_until=None,
        updated_at=utcnow(),
    )


async def mark_unknown(session: AsyncSession, delivery_id: str, reason: str) -> bool:
    """An earlier try may have reached the provider, which cannot drop a copy: say so and
    send nothing more until an operator resends it."""
    return await _update(
        session,
        and_(Delivery.id == delivery_id, Delivery.status == "sending"),
        status="unknown",
        error=reason,
        leased_until=None,
        updated_at=utcnow(),
    )


async def _update(session: AsyncSession, condition: Any, **values: Any) -> bool:
    result = await session.execute(
        update(Delivery)
        .where(condition)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    return bool(result.rowcount)


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


async def find_delivery(session: AsyncSession, tenant_id: str, delivery_id: str) -> Delivery | None:
    """The tenant's delivery, or None (also for another tenant's)."""
    found = await session.execute(
        select(Delivery).where(Delivery.tenant_id == tenant_id, Delivery.id == delivery_id)
    )
    return found.scalar_one_or_none()


async def deliveries_page(
    session: AsyncSession, tenant_id: str, status: str | None, page: PageRequest
) -> tuple[list[Delivery], str | None]:
    """The tenant's deliveries, newest first, of one status or all."""
    query = select(Delivery).where(Delivery.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Delivery.status == status)
    rows, next_cursor = await keyset_page(
        session, query, Delivery.created_at, Delivery.id, page, descending=True
    )
    return [row[0] for row in rows], next_cursor


async def resends_of(
    session: AsyncSession, tenant_id: str, originals: list[Delivery]
) -> dict[str, Delivery]:
    """The resends of ``originals``, by the original's key."""
    keys = [original.idempotency_key + RESEND_SUFFIX for original in originals]
    if not keys:
        return {}
    rows = await session.execute(
        select(Delivery).where(Delivery.tenant_id == tenant_id, Delivery.idempotency_key.in_(keys))
    )
    return {row.idempotency_key.removesuffix(RESEND_SUFFIX): row for row in rows.scalars()}


async def fallbacks_of(session: AsyncSession, delivery_ids: list[str]) -> dict[str, list[Delivery]]:
    """The fallback tries made after each of these deliveries, in the order they were made
    (a try's own fallback follows it), by the first delivery's id."""
    chains: dict[str, list[Delivery]] = {}
    frontier = {delivery_id: delivery_id for delivery_id in delivery_ids}
    while frontier:
        rows = await session.execute(
            select(Delivery)
            .where(Delivery.fallback_of.in_(list(frontier)))
            .order_by(Delivery.created_at)
        )
        found = list(rows.scalars())
        next_frontier: dict[str, str] = {}
        for row in found:
            first = frontier[row.fallback_of or ""]
            chains.setdefault(first, []).append(row)
            next_frontier[row.id] = first
        frontier = next_frontier
    return chains


async def find_by_key(session: AsyncSession, idempotency_key: str) -> Delivery | None:
    found = await session.execute(
        select(Delivery).where(Delivery.idempotency_key == idempotency_key)
    )
    return found.scalar_one_or_none()
