"""Deliveries as their senders show them: state, receipts and fallback tries."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.models.deliveries import DeliveryState, ReceiptPublic
from nudge.models.tables import Delivery
from nudge.store.deliveries import fallbacks_of
from nudge.store.receipts import receipts_of

# A follow-up record or journey shows its newest sends, not all it ever made.
SHOWN_PER_OWNER = 20


async def states_of(session: AsyncSession, rows: Sequence[Delivery]) -> list[DeliveryState]:
    """Each delivery's state, with its receipts and the fallback tries after it."""
    chains = await fallbacks_of(session, [row.id for row in rows])
    everything = [*rows, *(d for chain in chains.values() for d in chain)]
    receipts: dict[str, list[ReceiptPublic]] = {}
    for receipt in await receipts_of(session, [d.id for d in everything]):
        receipts.setdefault(receipt.delivery_id or "", []).append(
            ReceiptPublic(
                status=receipt.status,
                at=receipt.at,
                error_code=receipt.error_code,
                error=receipt.error,
            )
        )

    def state(row: Delivery, fallbacks: list[DeliveryState]) -> DeliveryState:
        return DeliveryState(
            id=row.id,
            channel=row.channel,
            status=row.status,
            provider_message_id=row.provider_message_id,
            error=row.error,
            error_code=row.error_code,
            created_at=row.created_at,
            sent_at=row.sent_at,
            delivered_at=row.delivered_at,
            read_at=row.read_at,
            failed_at=row.failed_at,
            replied_at=row.replied_at,
            segments=row.segments,
            receipts=receipts.get(row.id, []),
            fallbacks=fallbacks,
        )

    return [state(row, [state(try_, []) for try_ in chains.get(row.id, [])]) for row in rows]


async def states_belonging_to(
    session: AsyncSession, tenant_id: str, owners: Sequence[str]
) -> dict[str, list[DeliveryState]]:
    """The newest first sends (not fallback tries) of each owner (`record:<id>`, …)."""
    if not owners:
        return {}
    rows = await session.execute(
        select(Delivery)
        .where(
            Delivery.tenant_id == tenant_id,
            Delivery.belongs_to.in_(list(owners)),
            Delivery.fallback_of.is_(None),
        )
        .order_by(Delivery.created_at.desc(), Delivery.id.desc())
    )
    by_owner: dict[str, list[Delivery]] = {}
    for row in rows.scalars():
        kept = by_owner.setdefault(row.belongs_to or "", [])
        if len(kept) < SHOWN_PER_OWNER:
            kept.append(row)
    return {owner: await states_of(session, kept) for owner, kept in by_owner.items()}
