"""The watch on a sent delivery whose channel falls back after a time (an outbox start)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from nudge.models.payloads import FallbackWatchInput
from nudge.models.tables import Channel, Delivery, OutboxEntry
from nudge.naming import (
    DELIVERY_FALLBACK_WORKFLOW,
    Kind,
    delivery_fallback_workflow_id,
    search_attributes,
)
from nudge.runs.outbox import start_options
from nudge.settings import Settings
from nudge.store import outbox
from nudge.store.directory import find_channel


async def stage_fallback_after_failure(
    session: AsyncSession, settings: Settings, tenant_slug: str, delivery: Delivery
) -> OutboxEntry | None:
    """A provider reported a sent message `failed` or `undelivered`: fall back now, if
    the first try's channel has fallback channels. Safe beside a timed watch of the same
    send: every fallback try has its own idempotency key, so two watches send it once."""
    first = delivery
    while first.fallback_of is not None:
        earlier = await session.get(Delivery, first.fallback_of)
        if earlier is None:
            break
        first = earlier
    channel = await find_channel(session, delivery.tenant_id, first.channel)
    if channel is None or not channel.fallback:
        return None
    return outbox.add_start(
        session,
        tenant_id=delivery.tenant_id,
        workflow=DELIVERY_FALLBACK_WORKFLOW,
        workflow_id=f"{delivery_fallback_workflow_id(tenant_slug, delivery.id)}/failed",
        arg=FallbackWatchInput(
            tenant_id=delivery.tenant_id,
            delivery_id=first.id,
            watched_delivery_id=delivery.id,
            after_minutes=0,
            time_scale=settings.time_scale,
        ),
        options=start_options(
            settings.task_queue,
            search_attributes(tenant_slug, Kind.DELIVERY_FALLBACK),
            f"Fallback after delivery {delivery.id} failed on {delivery.channel}",
            conflict="use_existing",
        ),
    )


class FallbackWatcher:
    """Stages, in the transaction that records a send `sent`, the run that checks after
    the channel's `fallback_after_minutes` whether it was delivered (and falls back if not).
    Relayed by the workers' outbox relay, so a crash right after the send loses nothing."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def __call__(
        self,
        session: AsyncSession,
        delivery: Delivery,
        channel: Channel,
        tenant_slug: str,
        after_minutes: int,
    ) -> None:
        outbox.add_start(
            session,
            tenant_id=delivery.tenant_id,
            workflow=DELIVERY_FALLBACK_WORKFLOW,
            workflow_id=delivery_fallback_workflow_id(tenant_slug, delivery.id),
            arg=FallbackWatchInput(
                tenant_id=delivery.tenant_id,
                delivery_id=delivery.id,
                after_minutes=after_minutes,
                time_scale=self._settings.time_scale,
            ),
            options=start_options(
                self._settings.task_queue,
                search_attributes(tenant_slug, Kind.DELIVERY_FALLBACK),
                f"Fallback watch on delivery {delivery.id} ({channel.slug}, {after_minutes} min)",
                conflict="use_existing",
            ),
            relayed_inline=False,
        )
