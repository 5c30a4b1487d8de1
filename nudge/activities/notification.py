"""Activities of individual notifications."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from nudge.activities.failures import permanent, template_failure
from nudge.messaging.channels.base import Outbound
from nudge.messaging.contacts import contact_context, recipient_of
from nudge.messaging.delivery import Deliverer
from nudge.models.db import transaction
from nudge.models.messages import parse_message, render_message
from nudge.models.payloads import DeliverNotificationInput, DeliveryResult, NotificationFailureInput
from nudge.models.tables import Contact, Delivery, Notification, Tenant, utcnow
from nudge.models.template_context import message_context
from nudge.store.directory import find_channel
from nudge.templating import TemplateProblem


class NotificationActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], deliverer: Deliverer) -> None:
        self._sessions = sessions
        self._deliverer = deliverer

    @activity.defn(name="deliver_notification")
    async def deliver_notification(self, request: DeliverNotificationInput) -> DeliveryResult:
        """Render the notification for its contact and send it, effectively once."""
        async with self._sessions() as session:
            notification = await session.get_one(Notification, request.notification_id)
            tenant = await session.get_one(Tenant, request.tenant_id)
            contact = await session.get_one(Contact, notification.contact_id)
            channel = await find_channel(session, tenant.id, notification.resolved_channel)
        if channel is None:
            raise permanent(
                "ChannelNotFound", f"channel {notification.resolved_channel!r} no longer exists"
            )
        try:
            message = render_message(
                parse_message(notification.message),
                message_context(contact_context(contact)),
            )
        except TemplateProblem as exc:
            raise template_failure(exc) from exc

        async def mark_notification_sent(session: AsyncSession, delivery: Delivery) -> None:
            sent = await session.get_one(Notification, notification.id)
            if delivery.status == "unknown":
                # Not `sent`, not `failed`: nobody knows, and it is not sent again unless an
                # operator resends the delivery (POST /v1/deliveries/{id}/resend).
                sent.status, sent.delivery_id = "unknown", delivery.id
                sent.error = f"outcome unknown (delivery {delivery.id}): {delivery.error}"
            else:
                sent.status, sent.delivery_id, sent.error = "sent", delivery.id, None
            sent.updated_at = utcnow()

        outbound = Outbound(
            tenant=tenant.slug,
            channel=channel.slug,
            idempotency_key=request.idempotency_key,
            recipient=recipient_of(contact),
            message=message,
            source={"type": "notification", "notification_id": notification.id},
            belongs_to=f"notification:{notification.id}",
        )
        sent = await self._deliverer.deliver(
            tenant_id=tenant.id,
            contact=contact,
            channel=channel,
            outbound=outbound,
            after_sent=mark_notification_sent,
        )
        return DeliveryResult(
            delivery_id=sent.delivery_id,
            channel=channel.slug,
            already_sent=sent.already_sent,
            status=sent.status,
        )

    @activity.defn(name="record_notification_failure")
    async def record_notification_failure(self, request: NotificationFailureInput) -> None:
        """Mark the notification failed with the reason, once retries are exhausted."""
        async with transaction(self._sessions) as session:
            notification = await session.get_one(Notification, request.notification_id)
            if notification.status != "sent":
                notification.status = "failed"
                notification.error = request.reason
                notification.updated_at = utcnow()
