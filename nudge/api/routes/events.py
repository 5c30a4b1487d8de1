"""Events from services: messages (replies, agent answers) and assignments."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable

from fastapi import APIRouter, Depends, status
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.api.deps import ServiceDep, SessionDep, SessionsDep, SettingsDep, TemporalDep
from nudge.api.rate_limits import RATE_LIMITED, limit_events
from nudge.errors import Conflict, InvalidInput, NotFound
from nudge.models.events import (
    AssignmentAccepted,
    AssignmentEvent,
    MessageEvent,
    MessageEventAccepted,
)
from nudge.models.payloads import Ending, JourneyAssignment, JourneyMessage
from nudge.models.signals import JOURNEY_ASSIGNMENT, JOURNEY_MESSAGE, REPLY_TO_RECORD
from nudge.models.tables import Contact
from nudge.runs.followups import signal_record
from nudge.runs.journeys import enroll, signal_enrollment
from nudge.store.deliveries import is_own_delivery
from nudge.store.directory import find_contact
from nudge.store.journeys import active_enrollments_of_contact, journeys_triggered_by
from nudge.store.messages import add_event_message
from nudge.store.records import records_reminding
from nudge.store.tenants import Principal

log = logging.getLogger(__name__)

# One limit for every event route of a tenant, checked before the route reads or stores anything.
router = APIRouter(
    prefix="/v1/events",
    tags=["events"],
    dependencies=[Depends(limit_events)],
    responses=RATE_LIMITED,
)

# Runs started or signalled at once for one event: enough for dozens of journeys, and well
# under the database pool (each start commits its enrollment in a session of its own).
JOURNEY_CONCURRENCY = 16


@router.post("/messages", status_code=status.HTTP_202_ACCEPTED)
async def message_event(
    event: MessageEvent,
    principal: ServiceDep,
    session: SessionDep,
    sessions: SessionsDep,
    temporal: TemporalDep,
    settings: SettingsDep,
) -> MessageEventAccepted:
    """A message to or from a contact: kept in history; it can answer, end or start journeys
    and end follow-ups."""
    contact = await _contact(session, principal.tenant_id, event.contact_id)
    if event.direction == "outgoing" and await is_own_delivery(
        session, principal.tenant_id, event.message_id
    ):
        # The chat platform echoing what Nudge itself sent: already in the history, and not
        # an agent's answer (the `outgoing_message` exit is about people, not about us).
        return MessageEventAccepted(status="duplicate", message_id=event.message_id)
    if not await _store(session, principal.tenant_id, contact, event):
        return MessageEventAccepted(status="duplicate", message_id=event.message_id)
    if event.direction == "incoming":
        await _deliver_reply(session, temporal, principal.tenant_slug, contact.id, event.contact_id)
    notified, started = await _journeys(
        session, sessions, temporal, settings, principal, contact, event
    )
    return MessageEventAccepted(
        status="accepted",
        message_id=event.message_id,
        journeys_started=started,
        journeys_notified=notified,
    )


@router.post("/assignments", status_code=status.HTTP_202_ACCEPTED)
async def assignment_event(
    event: AssignmentEvent, principal: ServiceDep, session: SessionDep, temporal: TemporalDep
) -> AssignmentAccepted:
    """The contact was assigned to an agent or queue; a manual one can end journeys."""
    contact = await _contact(session, principal.tenant_id, event.contact_id)
    assignment = JourneyAssignment(assignee=event.assignee, manual=event.manual)
    active = await active_enrollments_of_contact(session, principal.tenant_id, contact.id)
    await session.close()  # nothing more to read; keep no transaction open while signalling
    journey_ids = [enrollment.journey_id for enrollment, _ in active]
    await _bounded(
        signal_enrollment(
            temporal,
            principal.tenant_slug,
            journey_id,
            event.contact_id,
            JOURNEY_ASSIGNMENT,
            assignment,
        )
        for journey_id in journey_ids
    )
    return AssignmentAccepted(journeys_notified=journey_ids)


async def _contact(session: AsyncSession, tenant_id: str, external_id: str) -> Contact:
    contact = await find_contact(session, tenant_id, external_id)
    if contact is None:
        raise InvalidInput.at(
            ("body", "contact_id"), f"no contact with external id {external_id!r}"
        )
    return contact


async def _store(
    session: AsyncSession, tenant_id: str, contact: Contact, event: MessageEvent
) -> bool:
    """Keep the message in the contact's history; False when this message_id was seen before."""
    if not await add_event_message(session, tenant_id, contact, event):
        return False
    try:
        await session.commit()
    except IntegrityError:  # the same message_id, posted twice at once
        await session.rollback()
        return False
    return True


async def _deliver_reply(
    session: SessionDep, temporal: TemporalDep, tenant: str, contact_id: str, external_id: str
) -> None:
    """Tell every record run this contact was reminded by; each decides (`exit.on_reply`)."""
    stop = Ending(by=f"contact {external_id}", reason="replied")
    for followup_id, reconciliation_id in await records_reminding(session, contact_id):
        await signal_record(temporal, tenant, followup_id, reconciliation_id, REPLY_TO_RECORD, stop)


# Journeys ------------------------------------------------------------------------------------


async def _journeys(
    session: AsyncSession,
    sessions: SessionsDep,
    temporal: TemporalDep,
    settings: SettingsDep,
    principal: Principal,
    contact: Contact,
    event: MessageEvent,
) -> tuple[list[str], list[str]]:
    """Deliver the message to the contact's journeys in progress and, when it comes from the
    contact, enroll them in the journeys it triggers; (journeys notified, journeys started)."""
    active = await active_enrollments_of_contact(session, principal.tenant_id, contact.id)
    # Read before anything starts: a journey this message starts does not get it as well.
    triggered = (
        await journeys_triggered_by(session, principal.tenant_id, contact.id, event.text)
        if event.direction == "incoming"
        else []
    )
    await session.close()  # the starts below commit in sessions of their own
    message = JourneyMessage(
        direction=event.direction,
        channel=event.channel,
        text=event.text,
        message_id=event.message_id,
    )
    notified = [enrollment.journey_id for enrollment, _ in active]
    signals = (
        signal_enrollment(
            temporal, principal.tenant_slug, journey_id, event.contact_id, JOURNEY_MESSAGE, message
        )
        for journey_id in notified
    )
    starts = (
        _start(temporal, sessions, settings, principal, journey_id, event)
        for journey_id in triggered
    )
    results = await _bounded([*signals, *starts])
    started = [j for j, ok in zip(triggered, results[len(notified) :], strict=True) if ok]
    return notified, started


async def _start(
    temporal: TemporalDep,
    sessions: SessionsDep,
    settings: SettingsDep,
    principal: Principal,
    journey_id: str,
    event: MessageEvent,
) -> bool:
    """Enroll the contact; False when someone else was quicker or the journey just stopped."""
    try:
        await enroll(
            temporal,
            sessions,
            settings,
            tenant_id=principal.tenant_id,
            tenant_slug=principal.tenant_slug,
            journey_id=journey_id,
            external_id=event.contact_id,
            # The message that started it, for templates (`{{ variables.trigger_message }}`).
            variables={"trigger_message": event.text},
        )
    except (Conflict, NotFound) as exc:  # NotFound: deleted a moment ago
        log.info("journey %s not started for %r: %s", journey_id, event.contact_id, exc)
        return False
    return True


async def _bounded(work: Iterable[Awaitable[bool]]) -> list[bool]:
    """Run the awaitables concurrently, a few at a time; the results in order."""
    limit = asyncio.Semaphore(JOURNEY_CONCURRENCY)

    async def one(awaitable: Awaitable[bool]) -> bool:
        async with limit:
            return await awaitable

    return list(await asyncio.gather(*(one(a) for a in work)))
