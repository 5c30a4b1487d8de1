"""An assignment of a contact to an agent or queue, told to their journeys in progress.

What `POST /v1/events/assignments` does for each event, and what the inbox does when an
agent opens or transfers an interaction: one `assignment` signal per journey the contact is
in, staged in the caller's transaction (a manual one is the `manual_assignment` exit).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from nudge.models.payloads import JourneyAssignment
from nudge.models.signals import JOURNEY_ASSIGNMENT
from nudge.models.tables import Contact, OutboxEntry
from nudge.runs.journeys import stage_signal
from nudge.store.journeys import active_enrollments_of_contact


@dataclass
class StagedAssignment:
    """The signals to relay after the commit, and the journeys they go to."""

    entries: list[OutboxEntry] = field(default_factory=list)
    notified: list[str] = field(default_factory=list)


def assignment_key(event_id: str) -> str:
    """The outbox's event key of an assignment: a retry finds what is left of it."""
    return f"assignment:{event_id}"


async def stage_assignment(
    session: AsyncSession,
    tenant_id: str,
    tenant_slug: str,
    contact: Contact,
    *,
    assignee: str,
    manual: bool,
    event_id: str,
) -> StagedAssignment:
    """An `assignment` signal for each of the contact's journeys in progress; runs drop a
    repeat of ``event_id``."""
    staged = StagedAssignment()
    for enrollment, _journey in await active_enrollments_of_contact(session, tenant_id, contact.id):
        assignment = JourneyAssignment(
            assignee=assignee, manual=manual, event_id=event_id, enrollment_id=enrollment.id
        )
        staged.entries.append(
            stage_signal(
                session,
                tenant_id,
                tenant_slug,
                enrollment.journey_id,
                contact.external_id,
                JOURNEY_ASSIGNMENT,
                assignment,
                event_key=assignment_key(event_id),
            )
        )
        staged.notified.append(enrollment.journey_id)
    return staged
