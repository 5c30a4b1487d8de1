"""The activity of an operator's resend: the stored message, under the key `<key>#resend`."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from nudge.activities.failures import permanent
from nudge.messaging.channels.base import Outbound, Recipient
from nudge.messaging.delivery import Deliverer
from nudge.models.messages import parse_message
from nudge.models.payloads import ResendInput, ResendResult
from nudge.models.tables import Contact, Tenant
from nudge.store.deliveries import RESEND_SUFFIX, find_delivery
from nudge.store.directory import find_channel


class DeliveryResendActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], deliverer: Deliverer) -> None:
        self._sessions = sessions
        self._deliverer = deliverer

    @activity.defn(name="resend_delivery")
    async def resend_delivery(self, request: ResendInput) -> ResendResult:
        """Send the delivery's message again, as it was claimed, effectively once."""
        async with self._sessions() as session:
            original = await find_delivery(session, request.tenant_id, request.delivery_id)
            if original is None or original.outbound is None:
                raise permanent("NotResendable", f"delivery {request.delivery_id} kept no message")
            tenant = await session.get_one(Tenant, request.tenant_id)
            contact = await session.get_one(Contact, original.contact_id)
            channel = await find_channel(session, tenant.id, original.channel)
        if channel is None:
            raise permanent("ChannelNotFound", f"channel {original.channel!r} no longer exists")
        kept = original.outbound
        outbound = Outbound(
            tenant=tenant.slug,
            channel=channel.slug,
            # A key of its own: the provider must not drop it as a copy of the first try.
            idempotency_key=original.idempotency_key + RESEND_SUFFIX,
            recipient=Recipient(**kept["recipient"]),
            message=parse_message(kept["message"]),
            source={**kept.get("source", {}), "resend_of": original.id},
            belongs_to=original.belongs_to,
        )
        sent = await self._deliverer.deliver(
            tenant_id=tenant.id, contact=contact, channel=channel, outbound=outbound
        )
        return ResendResult(delivery_id=sent.delivery_id, status=sent.status)
