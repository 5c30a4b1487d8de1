"""Events from services: messages (replies, agent answers) and assignments."""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from nudge.api.deps import ServiceDep, SessionDep, TemporalDep
from nudge.api.followup_runs import signal_record
from nudge.errors import InvalidInput
from nudge.models.events import EventAccepted, MessageEvent
from nudge.models.payloads import Stop
from nudge.models.tables import FollowUpRecipient, FollowUpRecord, Message, utcnow
from nudge.store.directory import find_contact

router = APIRouter(prefix="/v1/events", tags=["events"])


@router.post("/messages", status_code=status.HTTP_202_ACCEPTED)
async def message_event(
    event: MessageEvent, principal: ServiceDep, session: SessionDep, temporal: TemporalDep
) -> EventAccepted:
    """A message to or from a contact: kept in history; a reply can end follow-ups."""
    contact = await find_contact(session, principal.tenant_id, event.contact_id)
    if contact is None:
        raise InvalidInput.at(
            ("body", "contact_id"), f"no contact with external id {event.contact_id!r}"
        )
    session.add(
        Message(
            tenant_id=principal.tenant_id,
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
        return EventAccepted(status="duplicate", message_id=event.message_id)
    if event.direction == "incoming":
        await _deliver_reply(session, temporal, principal.tenant, contact.id, event.contact_id)
    return EventAccepted(status="accepted", message_id=event.message_id)


async def _deliver_reply(
    session: SessionDep, temporal: TemporalDep, tenant: str, contact_id: str, external_id: str
) -> None:
    """Tell every record run this contact was reminded by; each decides (`exit.on_reply`)."""
    rows = await session.execute(
        select(FollowUpRecord.followup_id, FollowUpRecord.reconciliation_id)
        .join(FollowUpRecipient, FollowUpRecipient.record_id == FollowUpRecord.id)
        .where(FollowUpRecipient.contact_id == contact_id, FollowUpRecord.state == "following")
    )
    stop = Stop(by=f"contact {external_id}", reason="replied")
    for followup_id, reconciliation_id in rows.all():
        await signal_record(temporal, tenant, followup_id, reconciliation_id, "reply", stop)
