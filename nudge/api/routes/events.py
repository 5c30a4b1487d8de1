"""Events from services: messages (replies, agent answers) and assignments.

An event is stored with everything Temporal must be told of it (outbox entries) in one
transaction, then relayed. Once the answer is 202 nothing of it is lost: what Temporal did
not take is relayed again by the workers, and a client's retry with the same id relays
whatever is still pending at once. Workflows drop a repeat by the event's id.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from fastapi import APIRouter, Depends, status
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.api.deps import ServiceDep, SessionDep, SettingsDep
from nudge.api.rate_limits import RATE_LIMITED, RateLimitsDep, limit_events
from nudge.api.relay import RelayDep
from nudge.errors import InvalidInput
from nudge.metrics import EventKind, count_event, count_redelivery
from nudge.models.events import (
    AssignmentAccepted,
    AssignmentEvent,
    MessageBatchAccepted,
    MessageEvent,
    MessageEventAccepted,
    MessageEventBatch,
    ReceiptAccepted,
    ReceiptEvent,
)
from nudge.models.payloads import JourneyAssignment
from nudge.models.signals import JOURNEY_ASSIGNMENT
from nudge.models.tables import Contact, OutboxEntry, utcnow
from nudge.runs.incoming import Staged, stage_message
from nudge.runs.journeys import stage_signal
from nudge.runs.outbox import Relay
from nudge.settings import Settings
from nudge.store.deliveries import find_by_key, is_own_delivery
from nudge.store.directory import find_contact, find_contacts
from nudge.store.journeys import (
    active_enrollments_of_contact,
)
from nudge.store.messages import add_event_message
from nudge.store.outbox import has_event, pending_of_event
from nudge.store.receipts import record_own_receipt
from nudge.store.tenants import Principal

log = logging.getLogger(__name__)

# A batch tells Temporal what its messages set off every this many outbox entries, so the
# first runs go on while the rest of the batch is stored.
RELAY_EVERY = 20

# One limit for every event route of a tenant, checked before the route reads or stores anything.
router = APIRouter(
    prefix="/v1/events",
    tags=["events"],
    dependencies=[Depends(limit_events)],
    responses=RATE_LIMITED,
)


@router.post("/messages", status_code=status.HTTP_202_ACCEPTED)
async def message_event(
    event: MessageEvent,
    principal: ServiceDep,
    session: SessionDep,
    relay: RelayDep,
    settings: SettingsDep,
) -> MessageEventAccepted:
    """A message to or from a contact: kept in history; it can answer, end or start journeys
    and end follow-ups. A retry with the same `message_id` finishes what the first try left
    undone and answers `duplicate`."""
    contact = await _contact(session, principal.tenant_id, event.contact_id)
    taken = await _take_message(session, settings, principal, contact, event)
    key = f"message:{event.message_id}"
    if taken.staged is None:
        if taken.earlier_try:
            await _finish_earlier_try(session, relay, principal.tenant_id, key, "message")
        return taken.answer
    try:
        await session.commit()
    except IntegrityError:  # the same message_id, posted twice at once: the other one won
        await _finish_earlier_try(session, relay, principal.tenant_id, key, "message")
        return _duplicate(event)
    count_event("message", "accepted")
    await relay.relay_written(taken.staged.entries)
    return taken.answer


@router.post("/messages/batch", status_code=status.HTTP_202_ACCEPTED)
async def message_events(
    batch: MessageEventBatch,
    principal: ServiceDep,
    session: SessionDep,
    relay: RelayDep,
    settings: SettingsDep,
    rate_limits: RateLimitsDep,
) -> MessageBatchAccepted:
    """Up to 500 messages in one request, each handled as `POST /v1/events/messages`
    handles one, in the order posted: what a service forwarding a burst sends. The answer
    lists each one's result in that order. A contact that does not exist is a 422 at its
    place (`body.events.3.contact_id`), and then none of the batch is stored."""
    if len(batch.events) > 1:  # the router counted one: each event counts against the limit
        await rate_limits.check(rate_limits.events, principal.tenant_id, cost=len(batch.events) - 1)
    contacts = await _contacts(session, principal.tenant_id, batch.events)
    taken: list[_Taken] = []
    to_relay: list[OutboxEntry] = []
    for event in batch.events:
        one = await _take_message(session, settings, principal, contacts[event.contact_id], event)
        if (staged := one.staged) is not None:
            # One transaction per message, as posted one by one: a batch does not keep the
            # database (the worker ending the runs it sets off writes too).
            try:
                await session.commit()
            except IntegrityError:  # posted by another request at the same moment
                # The rollback expires what the session holds, committed or not: read again.
                await session.rollback()
                contacts = await _contacts(session, principal.tenant_id, batch.events)
                for entry in to_relay:
                    await session.refresh(entry)
                one = _Taken(_duplicate(event), earlier_try=True)
            else:
                count_event("message", "accepted")
                to_relay += staged.entries
        taken.append(one)
        if len(to_relay) >= RELAY_EVERY:
            await session.commit()  # ends the reading transaction before awaiting Temporal
            await relay.relay_written(to_relay)
            to_relay = []
    await session.commit()
    await relay.relay_written(to_relay)
    for one in taken:
        if one.earlier_try:
            key = f"message:{one.answer.message_id}"
            await _finish_earlier_try(session, relay, principal.tenant_id, key, "message")
    return MessageBatchAccepted(results=[one.answer for one in taken])


@dataclass
class _Taken:
    answer: MessageEventAccepted
    staged: Staged | None = None  # what it sets off; None when it was not stored now
    earlier_try: bool = False  # stored by an earlier try, whose leftovers are to be relayed


def _duplicate(event: MessageEvent) -> MessageEventAccepted:
    return MessageEventAccepted(status="duplicate", message_id=event.message_id)


async def _take_message(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    contact: Contact,
    event: MessageEvent,
) -> _Taken:
    """Store one message and stage what it sets off, in the caller's transaction."""
    # One time for everything the message sets off (history, interaction, replies).
    event = event.model_copy(update={"at": event.at or utcnow()})
    if event.direction == "outgoing" and await is_own_delivery(
        session, principal.tenant_id, event.message_id
    ):
        # The chat platform echoing what Nudge itself sent: already in the history, and not
        # an agent's answer (the `outgoing_message` exit is about people, not about us).
        return _Taken(_duplicate(event))
    if not await add_event_message(session, principal.tenant_id, contact, event):
        return _Taken(_duplicate(event), earlier_try=True)
    key = f"message:{event.message_id}"
    staged = await stage_message(
        session, settings, principal.tenant_id, principal.tenant_slug, contact, event, key
    )
    answer = MessageEventAccepted(
        status="accepted",
        message_id=event.message_id,
        journeys_started=staged.started,
        journeys_notified=staged.notified,
    )
    return _Taken(answer, staged)


@router.post("/assignments", status_code=status.HTTP_202_ACCEPTED)
async def assignment_event(
    event: AssignmentEvent,
    principal: ServiceDep,
    session: SessionDep,
    relay: RelayDep,
) -> AssignmentAccepted:
    """The contact was assigned to an agent or queue; a manual one can end journeys."""
    contact = await _contact(session, principal.tenant_id, event.contact_id)
    event_id = event.event_id or uuid.uuid4().hex
    key = f"assignment:{event_id}"
    if event.event_id is not None and await has_event(session, principal.tenant_id, key):
        await _finish_earlier_try(session, relay, principal.tenant_id, key, "assignment")
        return AssignmentAccepted(status="duplicate", journeys_notified=[])
    entries, notified = [], []
    for enrollment, _journey in await active_enrollments_of_contact(
        session, principal.tenant_id, contact.id
    ):
        assignment = JourneyAssignment(
            assignee=event.assignee,
            manual=event.manual,
            event_id=event_id,
            enrollment_id=enrollment.id,
        )
        entries.append(
            stage_signal(
                session,
                principal.tenant_id,
                principal.tenant_slug,
                enrollment.journey_id,
                event.contact_id,
                JOURNEY_ASSIGNMENT,
                assignment,
                event_key=key,
            )
        )
        notified.append(enrollment.journey_id)
    await session.commit()
    count_event("assignment", "accepted")
    await relay.relay_written(entries)
    return AssignmentAccepted(journeys_notified=notified)


@router.post("/receipts", status_code=status.HTTP_202_ACCEPTED)
async def receipt_event(
    event: ReceiptEvent, principal: ServiceDep, session: SessionDep
) -> ReceiptAccepted:
    """A receipt from a webhook channel's receiver: the message Nudge posted with this
    `Idempotency-Key` was delivered, read or failed. Out-of-order receipts never move a
    delivery back; a repeat changes nothing."""
    delivery = await find_by_key(session, event.idempotency_key)
    if delivery is None or delivery.tenant_id != principal.tenant_id:
        return ReceiptAccepted(status="unknown_message")
    await record_own_receipt(
        session,
        delivery,
        event.status,
        event.at or utcnow(),
        error_code=event.error_code,
        error=event.error,
    )
    await session.commit()
    await session.refresh(delivery)
    count_event("receipt", "accepted")
    return ReceiptAccepted(status="accepted", delivery_status=delivery.status)


async def _contacts(
    session: AsyncSession, tenant_id: str, events: list[MessageEvent]
) -> dict[str, Contact]:
    """The batch's contacts by external id; a 422 naming every event whose contact is not."""
    found = await find_contacts(session, tenant_id, list({e.contact_id for e in events}))
    missing: list[tuple[tuple[str | int, ...], str]] = [
        (("body", "events", i, "contact_id"), f"no contact with external id {e.contact_id!r}")
        for i, e in enumerate(events)
        if e.contact_id not in found
    ]
    if missing:
        raise InvalidInput(missing)
    return found


async def _contact(session: AsyncSession, tenant_id: str, external_id: str) -> Contact:
    contact = await find_contact(session, tenant_id, external_id)
    if contact is None:
        raise InvalidInput.at(
            ("body", "contact_id"), f"no contact with external id {external_id!r}"
        )
    return contact


async def _finish_earlier_try(
    session: AsyncSession, relay: Relay, tenant_id: str, event_key: str, kind: EventKind
) -> None:
    """A retry of an accepted event: relay now whatever the first try could not."""
    await session.rollback()
    pending = await pending_of_event(session, tenant_id, event_key)
    await session.close()
    count_event(kind, "duplicate")
    if pending:
        count_redelivery(kind)
        await relay.relay_ids(pending, by="retry")
