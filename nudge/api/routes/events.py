"""Events from services: messages (replies, agent answers) and assignments."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import Annotated, Literal

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import and_, exists, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.api.deps import ServiceDep, SessionDep, SettingsDep, TemporalDep
from nudge.api.routes.journeys import SessionsDep
from nudge.errors import Conflict, InvalidInput, NotFound
from nudge.models.directory import EXTERNAL_ID
from nudge.models.events import EventAccepted, MessageEvent
from nudge.models.journeys import Trigger
from nudge.models.payloads import Ending, JourneyAssignment, JourneyMessage
from nudge.models.signals import JOURNEY_ASSIGNMENT, JOURNEY_MESSAGE, REPLY_TO_RECORD
from nudge.models.tables import (
    Contact,
    Delivery,
    Enrollment,
    FollowUpRecipient,
    FollowUpRecord,
    Journey,
    JourneyVersion,
    Message,
    utcnow,
)
from nudge.runs.followups import signal_record
from nudge.runs.journeys import enroll, signal_enrollment
from nudge.store.directory import find_contact
from nudge.store.journeys import ACTIVE, active_enrollments_of_contact
from nudge.store.tenants import Principal

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/events", tags=["events"])

# Runs started or signalled at once for one event: enough for dozens of journeys, and well
# under the database pool (each start commits its enrollment in a session of its own).
JOURNEY_CONCURRENCY = 16


class MessageEventAccepted(EventAccepted):
    journeys_started: list[str] = Field(
        default_factory=list, description="Journeys this message enrolled the contact in."
    )
    journeys_notified: list[str] = Field(
        default_factory=list, description="Journeys in progress for the contact that got it."
    )


class AssignmentEvent(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"contact_id": "ada", "assignee": "grace", "manual": True}]
        },
    )

    contact_id: EXTERNAL_ID
    assignee: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="The agent or queue the contact was assigned to."
    )
    manual: bool = Field(
        default=False, description="A person assigned them (the `manual_assignment` exit)."
    )


class AssignmentAccepted(BaseModel):
    status: Literal["accepted"] = "accepted"
    journeys_notified: list[str] = Field(description="Journeys in progress that got it.")


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
    if event.direction == "outgoing" and await _is_own_send(session, principal, event.message_id):
        # The chat platform echoing what Nudge itself sent: already in the history, and not
        # an agent's answer (the `outgoing_message` exit is about people, not about us).
        return MessageEventAccepted(status="duplicate", message_id=event.message_id)
    if not await _store(session, principal.tenant_id, contact, event):
        return MessageEventAccepted(status="duplicate", message_id=event.message_id)
    if event.direction == "incoming":
        await _deliver_reply(session, temporal, principal.tenant, contact.id, event.contact_id)
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
            temporal, principal.tenant, journey_id, event.contact_id, JOURNEY_ASSIGNMENT, assignment
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
    session.add(
        Message(
            tenant_id=tenant_id,
            contact_id=contact.id,
            direction=event.direction,
            channel=event.channel,
            kind="text",
            text=event.text,
            body={"kind": "text", "text": event.text},
            source={"type": "event"},
            external_message_id=event.message_id,
            at=event.at or utcnow(),
        )
    )
    if event.direction == "incoming":
        contact.last_channel = event.channel
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        return False
    return True


async def _is_own_send(session: AsyncSession, principal: Principal, message_id: str) -> bool:
    """True when ``message_id`` is the idempotency key of one of Nudge's own deliveries."""
    found = await session.execute(
        select(Delivery.id).where(
            Delivery.tenant_id == principal.tenant_id, Delivery.idempotency_key == message_id
        )
    )
    return found.first() is not None


async def _deliver_reply(
    session: SessionDep, temporal: TemporalDep, tenant: str, contact_id: str, external_id: str
) -> None:
    """Tell every record run this contact was reminded by; each decides (`exit.on_reply`)."""
    rows = await session.execute(
        select(FollowUpRecord.followup_id, FollowUpRecord.reconciliation_id)
        .join(FollowUpRecipient, FollowUpRecipient.record_id == FollowUpRecord.id)
        .where(FollowUpRecipient.contact_id == contact_id, FollowUpRecord.state == "following")
    )
    stop = Ending(by=f"contact {external_id}", reason="replied")
    for followup_id, reconciliation_id in rows.all():
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
    triggered = await _triggered(session, principal.tenant_id, contact.id, event)
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
            temporal, principal.tenant, journey_id, event.contact_id, JOURNEY_MESSAGE, message
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


async def _triggered(
    session: AsyncSession, tenant_id: str, contact_id: str, event: MessageEvent
) -> list[str]:
    """Published journeys this incoming message starts for the contact, in one query:
    an `incoming_message` trigger that matches, and the contact neither in it nor ejected."""
    if event.direction != "incoming":
        return []
    in_it_or_ejected = exists().where(
        Enrollment.journey_id == Journey.id,
        Enrollment.contact_id == contact_id,
        or_(Enrollment.state == ACTIVE, Enrollment.ejected.is_(True)),
    )
    rows = await session.execute(
        select(Journey.id, JourneyVersion.definition)
        .join(
            JourneyVersion,
            and_(
                JourneyVersion.journey_id == Journey.id, JourneyVersion.version == Journey.version
            ),
        )
        .where(
            Journey.tenant_id == tenant_id,
            Journey.status == "published",
            Journey.trigger_type == "incoming_message",
            ~in_it_or_ejected,
        )
        .order_by(Journey.created_at, Journey.id)
    )
    return [
        str(row[0]) for row in rows if Trigger.model_validate(row[1]["trigger"]).matches(event.text)
    ]


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
            tenant=principal.tenant,
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
