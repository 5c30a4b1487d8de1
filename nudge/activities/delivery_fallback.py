"""The fallback watch's step: was the watched try delivered? If not, the next channel."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from nudge.messaging.channels.base import Outbound, Recipient
from nudge.messaging.delivery import Deliverer
from nudge.models.db import read_only
from nudge.models.messages import parse_message
from nudge.models.payloads import FallbackStepInput, FallbackStepResult
from nudge.models.tables import Contact, Delivery, Tenant
from nudge.store.deliveries import find_delivery
from nudge.store.directory import find_channel

# The contact has the message (or answered it): nothing to fall back for.
_REACHED = frozenset({"delivered", "read"})


class DeliveryFallbackActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], deliverer: Deliverer) -> None:
        self._sessions = sessions
        self._deliverer = deliverer

    @activity.defn(name="fall_back_if_undelivered")
    async def fall_back_if_undelivered(self, request: FallbackStepInput) -> FallbackStepResult:
        """Try the next fallback channel for a try not delivered in time; idempotent by the
        fallback try's own key, so a retried step sends nothing twice."""
        async with read_only(self._sessions)() as session:
            first = await find_delivery(session, request.tenant_id, request.first_delivery_id)
            watched = await find_delivery(session, request.tenant_id, request.watched_delivery_id)
            if first is None or watched is None or first.outbound is None:
                return FallbackStepResult(next_delivery_id=None, outcome="delivery gone")
            if watched.status in _REACHED or watched.replied_at is not None:
                return FallbackStepResult(next_delivery_id=None, outcome=watched.status)
            tenant = await session.get_one(Tenant, first.tenant_id)
            contact = await session.get_one(Contact, first.contact_id)
            channel = await find_channel(session, tenant.id, first.channel)
        if channel is None:
            return FallbackStepResult(next_delivery_id=None, outcome="channel gone")
        sent = await self._deliverer.fall_back_from(
            tenant_id=tenant.id,
            contact=contact,
            channel=channel,
            outbound=_outbound(tenant, first),
            after=watched.channel,
        )
        if sent is None:
            return FallbackStepResult(
                next_delivery_id=None, outcome=f"{watched.status}; no fallback channel left"
            )
        async with read_only(self._sessions)() as session:
            made = await find_delivery(session, request.tenant_id, sent.delivery_id)
        chain = [channel.slug, *(channel.fallback or [])]
        last = made is None or made.channel == chain[-1]
        return FallbackStepResult(
            next_delivery_id=sent.delivery_id, outcome=watched.status, last=last
        )


def _outbound(tenant: Tenant, first: Delivery) -> Outbound:
    """The first try's message as it was claimed (each channel adapts it on its own)."""
    kept = first.outbound or {}
    return Outbound(
        tenant=tenant.slug,
        channel=first.channel,
        idempotency_key=first.idempotency_key,
        recipient=Recipient(**kept["recipient"]),
        message=parse_message(kept["message"]),
        source={**kept.get("source", {}), "fallback_of": first.id},
        belongs_to=first.belongs_to,
    )
