"""What a message written while the tenant is closed sets off: the closed message (once per
closed period), "notify me when you open" (a yes to it), and the absence message (once a
day), all in the transaction that stores the message.

The `default` schedule answers every channel. Replies go out as notifications on the
channel the contact wrote on; subscriptions wait for the schedule's opening watch, one run
per schedule that sleeps until the next opening (a timer, not a poll).
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from nudge.models.answers import yes_or_no
from nudge.models.business_hours import BusinessHoursPut, closed_period_start, status_at
from nudge.models.messages import AnyMessage
from nudge.models.payloads import OpeningWatchInput
from nudge.models.tables import BusinessHours, ClosedReply, Contact, OutboxEntry
from nudge.naming import (
    OPENING_WATCH_WORKFLOW,
    Kind,
    opening_watch_workflow_id,
    search_attributes,
)
from nudge.runs.notifications import stage_notification
from nudge.runs.outbox import start_options
from nudge.settings import Settings
from nudge.store import outbox
from nudge.store.business_hours import find_business_hours, schedule_of
from nudge.store.closed_replies import (
    ABSENCE,
    SUBSCRIPTION,
    UNAVAILABLE,
    add_reply_once,
    find_reply,
)

DEFAULT_SCHEDULE = "default"
# The period of a closure that began before anything the horizon can see.
LONG_CLOSED = "long-closed"


async def stage_closed_hours(
    session: AsyncSession,
    settings: Settings,
    *,
    tenant_id: str,
    tenant_slug: str,
    contact: Contact,
    channel: str,
    text: str,
    payload: str | None,
    at: datetime,
) -> list[OutboxEntry]:
    """The replies an incoming message gets from the `default` schedule; none while open
    (but for an absence message)."""
    row = await find_business_hours(session, tenant_id, DEFAULT_SCHEDULE)
    if row is None:
        return []
    schedule = schedule_of(row)
    entries = await _absence(session, settings, tenant_slug, row, schedule, contact, channel, at)
    if status_at(schedule, at).open:
        return entries
    started = closed_period_start(schedule, at)
    period = started.isoformat() if started is not None else LONG_CLOSED
    asked = await find_reply(session, row.id, contact.id, UNAVAILABLE, period)
    if asked is not None:
        if yes_or_no(text, payload) == "yes" and schedule.notify_when_available.enabled:
            entries += await _subscribe(
                session, settings, tenant_slug, row, contact, channel, period
            )
        return entries
    unavailable = schedule.unavailable_message
    if unavailable.enabled and unavailable.message is not None:
        reply = await add_reply_once(
            session,
            tenant_id=tenant_id,
            schedule_id=row.id,
            contact_id=contact.id,
            kind=UNAVAILABLE,
            period=period,
            channel=channel,
        )
        if reply is not None:
            entries.append(
                await _reply(session, settings, tenant_slug, reply, contact, unavailable.message)
            )
    return entries


async def _absence(
    session: AsyncSession,
    settings: Settings,
    tenant_slug: str,
    row: BusinessHours,
    schedule: BusinessHoursPut,
    contact: Contact,
    channel: str,
    at: datetime,
) -> list[OutboxEntry]:
    """The absence message, once per contact per day (the schedule's day)."""
    absence = schedule.absence
    if not absence.enabled or absence.message is None:
        return []
    day = at.astimezone(ZoneInfo(schedule.timezone)).date().isoformat()
    reply = await add_reply_once(
        session,
        tenant_id=row.tenant_id,
        schedule_id=row.id,
        contact_id=contact.id,
        kind=ABSENCE,
        period=day,
        channel=channel,
    )
    if reply is None:
        return []
    return [await _reply(session, settings, tenant_slug, reply, contact, absence.message)]


async def _subscribe(
    session: AsyncSession,
    settings: Settings,
    tenant_slug: str,
    row: BusinessHours,
    contact: Contact,
    channel: str,
    period: str,
) -> list[OutboxEntry]:
    """A yes: the contact is told when it opens (a second yes changes nothing)."""
    subscription = await add_reply_once(
        session,
        tenant_id=row.tenant_id,
        schedule_id=row.id,
        contact_id=contact.id,
        kind=SUBSCRIPTION,
        period=period,
        channel=channel,
    )
    if subscription is None:
        return []
    return [stage_opening_watch(session, settings, tenant_slug, row)]


async def _reply(
    session: AsyncSession,
    settings: Settings,
    tenant_slug: str,
    reply: ClosedReply,
    contact: Contact,
    message: AnyMessage,
) -> OutboxEntry:
    _notification, entry = await stage_notification(
        session,
        settings,
        tenant_id=reply.tenant_id,
        tenant_slug=tenant_slug,
        contact=contact,
        channel=reply.channel,
        message=message,
        idempotency_key=f"hours:{reply.id}",
    )
    return entry


def stage_opening_watch(
    session: AsyncSession, settings: Settings, tenant_slug: str, row: BusinessHours
) -> OutboxEntry:
    """The schedule's opening watch, started unless it runs already."""
    return outbox.add_start(
        session,
        tenant_id=row.tenant_id,
        workflow=OPENING_WATCH_WORKFLOW,
        workflow_id=opening_watch_workflow_id(tenant_slug, row.slug),
        arg=OpeningWatchInput(
            tenant_id=row.tenant_id,
            tenant=tenant_slug,
            schedule_id=row.id,
            schedule=row.slug,
            time_scale=settings.time_scale,
        ),
        options=start_options(
            settings.task_queue,
            search_attributes(tenant_slug, Kind.OPENING_WATCH),
            f"Tell who asked when {row.slug!r} opens",
            conflict="use_existing",
        ),
    )


def stage_schedule_edited(
    session: AsyncSession, tenant_slug: str, row: BusinessHours
) -> OutboxEntry:
    """Tell a waiting watch that the schedule changed: it computes the opening again."""
    return outbox.add_signal(
        session,
        tenant_id=row.tenant_id,
        workflow_id=opening_watch_workflow_id(tenant_slug, row.slug),
        signal="edited",
        arg=None,
    )
