"""What an incoming or outgoing message means for the runs of its contact.

Shared by the events API and the providers' webhooks: the message is stored with an
outbox entry for everything Temporal must be told (replies to follow-up records, events for
journeys in progress, the start of journeys it triggers), all in the caller's transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from nudge.errors import Conflict
from nudge.models.events import MessageEvent
from nudge.models.payloads import ButtonPress, Ending, JourneyMessage
from nudge.models.signals import JOURNEY_MESSAGE, REPLY_TO_RECORD
from nudge.models.tables import Contact, Journey, OutboxEntry, utcnow
from nudge.runs.closed_hours import stage_closed_hours
from nudge.runs.followups import stage_record_press, stage_record_signal
from nudge.runs.journeys import stage_signal, stage_start
from nudge.settings import Settings
from nudge.store.interactions import on_incoming_message
from nudge.store.journeys import (
    active_enrollments_of_contact,
    create_enrollment,
    journeys_triggered_by,
)
from nudge.store.receipts import attribute_reply
from nudge.store.records import records_reminding

log = logging.getLogger(__name__)


@dataclass
class Staged:
    """What an accepted event is to tell Temporal, and whom."""

    entries: list[OutboxEntry] = field(default_factory=list)
    notified: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)


async def stage_message(
    session: AsyncSession,
    settings: Settings,
    tenant_id: str,
    tenant_slug: str,
    contact: Contact,
    event: MessageEvent,
    key: str,
    presses: dict[str, ButtonPress] | None = None,
    payload: str | None = None,
) -> Staged:
    """What the message means: a reply to every record that reminded the contact, an event
    for each of their journeys in progress, and, when it comes from the contact, the start of
    every journey it triggers."""
    staged = Staged()
    if event.direction == "incoming":
        at = event.at or utcnow()
        await attribute_reply(session, contact.id, event.channel, at)
        # Opened (or taken back to the queue) in the agents' inbox.
        await on_incoming_message(session, tenant_id, contact, event.channel, event.text, at)
        staged.entries += await stage_closed_hours(
            session,
            settings,
            tenant_id=tenant_id,
            tenant_slug=tenant_slug,
            contact=contact,
            channel=event.channel,
            text=event.text,
            payload=payload,
            at=at,
        )
        reply = Ending(by=f"contact {event.contact_id}", reason="replied")
        for record in await records_reminding(session, contact.id):
            press = (presses or {}).get(record.id)
            if press is not None:
                # A reply button of the record's card: the press, not a reply, so its
                # button actions run (a reply could end the record before them).
                staged.entries.append(
                    stage_record_press(session, tenant_slug, record, press, event_key=key)
                )
                continue
            # The run decides what a reply means for it (`exit.on_reply`).
            staged.entries.append(
                stage_record_signal(
                    session, tenant_slug, record, REPLY_TO_RECORD, reply, event_key=key
                )
            )
    # Read before anything starts: a journey this message starts does not get it as well.
    active = await active_enrollments_of_contact(session, tenant_id, contact.id)
    triggered = (
        await journeys_triggered_by(session, tenant_id, contact.id, event.text)
        if event.direction == "incoming"
        else []
    )
    for enrollment, _journey in active:
        message = JourneyMessage(
            direction=event.direction,
            channel=event.channel,
            text=event.text,
            message_id=event.message_id,
            enrollment_id=enrollment.id,
        )
        staged.entries.append(
            stage_signal(
                session,
                tenant_id,
                tenant_slug,
                enrollment.journey_id,
                event.contact_id,
                JOURNEY_MESSAGE,
                message,
                event_key=key,
            )
        )
        staged.notified.append(enrollment.journey_id)
    for journey_id in triggered:
        start = await _stage_enrollment(session, settings, tenant_slug, contact, journey_id, event)
        if start is not None:
            staged.entries.append(start)
            staged.started.append(journey_id)
    return staged


async def _stage_enrollment(
    session: AsyncSession,
    settings: Settings,
    tenant_slug: str,
    contact: Contact,
    journey_id: str,
    event: MessageEvent,
) -> OutboxEntry | None:
    """Enroll the contact in a journey the message triggers; None when someone else was
    quicker (the enrollment is made in a savepoint, so the message itself still commits)."""
    journey = await session.get(Journey, journey_id)
    if journey is None:
        return None
    try:
        # The message that started it, for templates (`{{ variables.trigger_message }}`).
        enrollment = await create_enrollment(
            session, journey, contact, {"trigger_message": event.text}
        )
        await session.flush()
    except Conflict as exc:
        log.info("journey %s not started for %r: %s", journey_id, event.contact_id, exc)
        return None
    return stage_start(
        session,
        settings,
        tenant_slug,
        journey,
        enrollment,
        event.contact_id,
        event_key=f"message:{event.message_id}",
    )
