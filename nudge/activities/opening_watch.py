"""The opening watch's activities: when the schedule opens next, and telling who asked."""

from __future__ import annotations

import asyncio
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from nudge.messaging.channels.base import Outbound
from nudge.messaging.contacts import contact_context, recipient_of
from nudge.messaging.delivery import Deliverer
from nudge.models.business_hours import next_opening_after
from nudge.models.db import read_only, transaction
from nudge.models.messages import AnyMessage, render_message
from nudge.models.payloads import NotifiedBatch, OpeningPlan
from nudge.models.tables import BusinessHours, ClosedReply, Contact, Tenant
from nudge.models.template_context import message_context
from nudge.store.business_hours import schedule_of
from nudge.store.closed_replies import mark_notified, waiting_subscriptions
from nudge.store.directory import find_channel
from nudge.templating import TemplateProblem

BATCH = 500
CONCURRENCY = 20


class OpeningWatchActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], deliverer: Deliverer) -> None:
        self._sessions = sessions
        self._deliverer = deliverer

    @activity.defn(name="plan_opening")
    async def plan_opening(self, schedule_id: str, at: str) -> OpeningPlan:
        """The first open instant from ``at`` (the run's time; ``at`` itself when open),
        recomputed from the stored schedule (an edit during the closure moves it), and how
        many contacts wait for it."""
        async with read_only(self._sessions)() as session:
            row = await session.get(BusinessHours, schedule_id)
            if row is None:
                return OpeningPlan(opens_at=None, waiting=0)
            waiting = await waiting_subscriptions(session, schedule_id, limit=BATCH)
        opens_at = next_opening_after(schedule_of(row), datetime.fromisoformat(at))
        return OpeningPlan(
            opens_at=opens_at.isoformat() if opens_at is not None else None, waiting=len(waiting)
        )

    @activity.defn(name="notify_waiting")
    async def notify_waiting(self, schedule_id: str) -> NotifiedBatch:
        """Tell up to a batch of waiting contacts that service is available again, each
        once: the send's key is the subscription's, and it is marked notified after."""
        async with read_only(self._sessions)() as session:
            row = await session.get_one(BusinessHours, schedule_id)
            tenant = await session.get_one(Tenant, row.tenant_id)
            waiting = await waiting_subscriptions(session, schedule_id, limit=BATCH)
        template = schedule_of(row).notify_when_available.message
        if template is None:
            return NotifiedBatch(notified=0, failed=0, more=False)
        semaphore = asyncio.Semaphore(CONCURRENCY)
        outcomes = await asyncio.gather(
            *(self._notify(semaphore, tenant, subscription, template) for subscription in waiting)
        )
        return NotifiedBatch(
            notified=sum(outcomes), failed=len(outcomes) - sum(outcomes), more=len(waiting) == BATCH
        )

    async def _notify(
        self,
        semaphore: asyncio.Semaphore,
        tenant: Tenant,
        subscription: ClosedReply,
        template: AnyMessage,
    ) -> bool:
        async with semaphore:
            activity.heartbeat(subscription.id)
            delivery_id = await self._send(tenant, subscription, template)
            # Marked either way: a send that failed for good is not tried at every opening.
            async with transaction(self._sessions) as session:
                await mark_notified(session, subscription.id, delivery_id)
            return delivery_id is not None

    async def _send(
        self, tenant: Tenant, subscription: ClosedReply, template: AnyMessage
    ) -> str | None:
        """The delivery's id; None when it cannot go (no channel, a template that fails, a
        provider that refuses for good). Retryable failures are raised: the activity is
        retried, and what was sent is found by its key."""
        async with read_only(self._sessions)() as session:
            contact = await session.get_one(Contact, subscription.contact_id)
            channel = await find_channel(session, tenant.id, subscription.channel)
        if channel is None:
            return None
        try:
            message = render_message(template, message_context(contact_context(contact)))
        except TemplateProblem:
            return None
        outbound = Outbound(
            tenant=tenant.slug,
            channel=channel.slug,
            idempotency_key=f"hours-open:{subscription.id}",
            recipient=recipient_of(contact),
            message=message,
            source={"type": "business_hours", "schedule_id": subscription.schedule_id},
            belongs_to=f"hours:{subscription.schedule_id}",
        )
        try:
            sent = await self._deliverer.deliver(
                tenant_id=tenant.id, contact=contact, channel=channel, outbound=outbound
            )
        except ApplicationError as exc:
            if not exc.non_retryable:
                raise
            return None
        return sent.delivery_id
