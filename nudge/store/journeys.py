"""Journeys, their versions and enrollments. Functions take the session and never commit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, exists, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.errors import Conflict, NotFound
from nudge.models.journeys import EnrollmentPublic, JourneyDefinition, JourneyPublic, Trigger
from nudge.models.tables import Contact, Enrollment, Journey, JourneyVersion, utcnow
from nudge.store.pagination import PageRequest, keyset_page

ACTIVE = "active"


# Journeys ------------------------------------------------------------------------------------


async def get_journey(session: AsyncSession, tenant_id: str, journey_id: str) -> Journey:
    journey = (
        await session.execute(
            select(Journey).where(Journey.tenant_id == tenant_id, Journey.id == journey_id)
        )
    ).scalar_one_or_none()
    if journey is None:
        raise NotFound("journey", journey_id)
    return journey


async def journeys_page(
    session: AsyncSession, tenant_id: str, page: PageRequest
) -> tuple[list[Journey], str | None]:
    """The tenant's journeys, oldest first."""
    query = select(Journey).where(Journey.tenant_id == tenant_id)
    rows, next_cursor = await keyset_page(session, query, Journey.created_at, Journey.id, page)
    return [journey for (journey,) in rows], next_cursor


async def journey_definition_at(
    session: AsyncSession, journey_id: str, version: int
) -> JourneyDefinition:
    row = await session.get_one(JourneyVersion, (journey_id, version))
    return JourneyDefinition.model_validate(row.definition)


async def create_journey(
    session: AsyncSession, tenant_id: str, definition: JourneyDefinition
) -> Journey:
    """A new `draft` journey at version 1 (call ``check_journey_references`` first)."""
    journey = Journey(
        tenant_id=tenant_id,
        name=definition.name,
        status="draft",
        version=1,
        trigger_type=definition.trigger.type,
    )
    session.add(journey)
    await session.flush()
    session.add(JourneyVersion(journey_id=journey.id, version=1, definition=_stored(definition)))
    await session.flush()
    return journey


async def save_journey_version(
    session: AsyncSession, journey: Journey, definition: JourneyDefinition
) -> Journey:
    """The definition as the journey's newest version; a published journey is not edited."""
    if journey.status == "published":
        raise Conflict(f"journey {journey.name!r} is published; stop it before editing it")
    journey.version += 1
    journey.name = definition.name
    journey.trigger_type = definition.trigger.type
    journey.updated_at = utcnow()
    session.add(
        JourneyVersion(
            journey_id=journey.id, version=journey.version, definition=_stored(definition)
        )
    )
    await session.flush()
    return journey


def _stored(definition: JourneyDefinition) -> dict[str, Any]:
    return definition.model_dump(mode="json", by_alias=True)


async def set_journey_status(session: AsyncSession, journey: Journey, status: str) -> Journey:
    """`published` (from draft or stopped) or `stopped` (from published)."""
    allowed = {"published": ("draft", "stopped"), "stopped": ("published",)}
    if journey.status not in allowed.get(status, ()):
        raise Conflict(f"journey {journey.name!r} is {journey.status}; it cannot become {status}")
    journey.status = status
    journey.updated_at = utcnow()
    await session.flush()
    return journey


async def journey_public(session: AsyncSession, journey: Journey) -> JourneyPublic:
    definition = await journey_definition_at(session, journey.id, journey.version)
    return JourneyPublic(
        **{**definition.model_dump(by_alias=True), "name": journey.name},
        id=journey.id,
        status=journey.status,
        version=journey.version,
        created_at=journey.created_at,
        updated_at=journey.updated_at,
    )


async def delete_journey(session: AsyncSession, journey: Journey) -> None:
    """The journey with its versions and enrollments (the foreign keys cascade)."""
    await session.execute(delete(Journey).where(Journey.id == journey.id))


async def versions_page(
    session: AsyncSession, journey_id: str, page: PageRequest
) -> tuple[list[JourneyVersion], str | None]:
    """Every saved version of the journey (found by its tenant first), oldest first."""
    query = select(JourneyVersion).where(JourneyVersion.journey_id == journey_id)
    # (version, journey_id) is the key: the journey is the same on every row.
    rows, next_cursor = await keyset_page(
        session, query, JourneyVersion.version, JourneyVersion.journey_id, page
    )
    return [version for (version,) in rows], next_cursor


async def journeys_triggered_by(
    session: AsyncSession, tenant_id: str, contact_id: str, text: str
) -> list[str]:
    """Published journeys an incoming message ``text`` starts for the contact, in one query:
    an `incoming_message` trigger that matches, and the contact neither in it nor ejected."""
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
    return [str(row[0]) for row in rows if Trigger.model_validate(row[1]["trigger"]).matches(text)]


# Enrollments ---------------------------------------------------------------------------------


async def create_enrollment(
    session: AsyncSession,
    journey: Journey,
    contact: Contact,
    variables: dict[str, Any],
    *,
    parent_id: str | None = None,
) -> Enrollment:
    """An `active` enrollment on the journey's newest version.

    Raises ``Conflict`` when the journey is not published, or the contact is already in it,
    or was ejected from it by a stop.
    """
    who = f"contact {contact.external_id!r}"
    if journey.status != "published":
        raise Conflict(f"journey {journey.name!r} is {journey.status}, not published")
    if await was_ejected(session, journey.id, contact.id):
        raise Conflict(
            f"{who} was ejected from journey {journey.name!r} when it was stopped;"
            " they are not enrolled in it again"
        )
    if await find_active_enrollment(session, journey.id, contact.id) is not None:
        raise Conflict(f"{who} is already in journey {journey.name!r}")
    enrollment = Enrollment(
        tenant_id=journey.tenant_id,
        journey_id=journey.id,
        contact_id=contact.id,
        version=journey.version,
        state=ACTIVE,
        variables=dict(variables),
        parent_id=parent_id,
        started_at=utcnow(),
        ejected=False,
    )
    try:
        async with session.begin_nested():
            session.add(enrollment)
    except IntegrityError:  # enrolled by someone else a moment ago
        raise Conflict(f"{who} is already in journey {journey.name!r}") from None
    return enrollment


async def find_active_enrollment(
    session: AsyncSession, journey_id: str, contact_id: str
) -> Enrollment | None:
    rows = await session.execute(
        select(Enrollment).where(
            Enrollment.journey_id == journey_id,
            Enrollment.contact_id == contact_id,
            Enrollment.state == ACTIVE,
        )
    )
    return rows.scalar_one_or_none()


async def was_ejected(session: AsyncSession, journey_id: str, contact_id: str) -> bool:
    rows = await session.execute(
        select(Enrollment.id)
        .where(
            Enrollment.journey_id == journey_id,
            Enrollment.contact_id == contact_id,
            Enrollment.ejected.is_(True),
        )
        .limit(1)
    )
    return rows.first() is not None


async def active_enrollments_of_contact(
    session: AsyncSession, tenant_id: str, contact_id: str
) -> list[tuple[Enrollment, Journey]]:
    """The contact's enrollments in progress (what message events are delivered to)."""
    rows = await session.execute(
        select(Enrollment, Journey)
        .join(Journey, Journey.id == Enrollment.journey_id)
        .where(
            Enrollment.tenant_id == tenant_id,
            Enrollment.contact_id == contact_id,
            Enrollment.state == ACTIVE,
        )
        .order_by(Enrollment.started_at, Enrollment.id)
    )
    return [(enrollment, journey) for enrollment, journey in rows]


async def contact_journeys(
    session: AsyncSession,
    tenant_id: str,
    contact: Contact,
    page: PageRequest,
    *,
    include_ended: bool = False,
) -> tuple[list[EnrollmentPublic], str | None]:
    """What the inbox shows: the contact's enrollments in progress, oldest first; with
    ``include_ended``, every one of them, ended ones included, newest first."""
    query = (
        select(Enrollment, Journey.name)
        .join(Journey, Journey.id == Enrollment.journey_id)
        .where(Enrollment.tenant_id == tenant_id, Enrollment.contact_id == contact.id)
    )
    if not include_ended:
        query = query.where(Enrollment.state == ACTIVE)
    rows, next_cursor = await keyset_page(
        session, query, Enrollment.started_at, Enrollment.id, page, descending=include_ended
    )
    return [enrollment_public(e, name, contact.external_id) for e, name in rows], next_cursor


def enrollment_public(
    enrollment: Enrollment, journey_name: str, external_id: str
) -> EnrollmentPublic:
    return EnrollmentPublic(
        id=enrollment.id,
        journey_id=enrollment.journey_id,
        journey_name=journey_name,
        contact_id=external_id,
        state=enrollment.state,
        current_step=enrollment.current_step,
        waiting_until=enrollment.waiting_until,
        started_at=enrollment.started_at,
        ended_at=enrollment.ended_at,
        ended_by=enrollment.ended_by,
        end_reason=enrollment.end_reason,
    )


async def enrollments_of_journey(
    session: AsyncSession, journey: Journey, state: str | None, page: PageRequest
) -> tuple[list[EnrollmentPublic], str | None]:
    """The journey's enrollments, newest first, in any state or in ``state``."""
    query = (
        select(Enrollment, Contact.external_id)
        .join(Contact, Contact.id == Enrollment.contact_id)
        .where(Enrollment.tenant_id == journey.tenant_id, Enrollment.journey_id == journey.id)
    )
    if state is not None:
        query = query.where(Enrollment.state == state)
    rows, next_cursor = await keyset_page(
        session, query, Enrollment.started_at, Enrollment.id, page, descending=True
    )
    return [enrollment_public(e, journey.name, external_id) for e, external_id in rows], next_cursor


def mark_ended(enrollment: Enrollment, state: str, by: str, reason: str) -> bool:
    """Record how an active enrollment ended; False (and no change) when it had already ended."""
    if enrollment.state != ACTIVE:
        return False
    enrollment.state = state
    enrollment.ended_by, enrollment.end_reason = by, reason
    enrollment.ended_at = utcnow()
    enrollment.waiting_until = None
    return True


async def abandon_enrollment(session: AsyncSession, enrollment_id: str, why: str) -> None:
    """End an enrollment whose run could not be started, so the contact can enter again."""
    enrollment = await session.get(Enrollment, enrollment_id)
    if enrollment is not None:
        mark_ended(enrollment, "exited", "enrollment", why)


async def eject_active_enrollments(
    session: AsyncSession, journey_id: str, by: str, reason: str, at: datetime
) -> int:
    """Every active enrollment of the journey becomes `stopped` and ejected, in one statement."""
    result = await session.execute(
        update(Enrollment)
        .where(Enrollment.journey_id == journey_id, Enrollment.state == ACTIVE)
        .values(
            state="stopped",
            ejected=True,
            ended_by=by,
            end_reason=reason,
            ended_at=at,
            waiting_until=None,
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def contacts_ejected_since(
    session: AsyncSession, journey_id: str, since: datetime
) -> list[str]:
    """External ids of the contacts a stop of the journey ejected from ``since`` on."""
    rows = await session.execute(
        select(Contact.external_id)
        .join(Enrollment, Enrollment.contact_id == Contact.id)
        .where(
            Enrollment.journey_id == journey_id,
            Enrollment.ejected.is_(True),
            Enrollment.ended_at >= since,
        )
        .distinct()
    )
    return list(rows.scalars())


async def tenant_has_journeys(session: AsyncSession, tenant_id: str) -> bool:
    found = await session.execute(select(Journey.id).where(Journey.tenant_id == tenant_id).limit(1))
    return found.first() is not None


async def handed_over_to(session: AsyncSession, enrollment_id: str) -> tuple[Enrollment, str]:
    """The enrollment that ``enrollment_id`` was handed over to, and its journey's name."""
    rows = await session.execute(
        select(Enrollment, Journey.name)
        .join(Journey, Journey.id == Enrollment.journey_id)
        .where(Enrollment.parent_id == enrollment_id)
    )
    child, name = rows.one()
    return child, name
