"""Journeys (customer workflows): definitions, lifecycle, enrollments, and the inbox view."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, status

from nudge.api.deps import (
    AdminDep,
    AgentDep,
    InboxDep,
    PageDep,
    ServiceDep,
    SessionDep,
    SessionsDep,
    SettingsDep,
    TemporalDep,
    paging,
)
from nudge.api.relay import RelayDep
from nudge.errors import Conflict
from nudge.models.journey_templates import JourneyTemplate
from nudge.models.journeys import (
    EnrollmentCreate,
    EnrollmentPublic,
    EnrollmentState,
    EnrollmentStop,
    JourneyDefinition,
    JourneyPublic,
    JourneyStop,
    JourneyVersionPublic,
)
from nudge.models.pages import Page
from nudge.models.payloads import Ending
from nudge.models.signals import STOP_ENROLLMENT
from nudge.models.tables import Journey
from nudge.runs.journeys import enroll, stage_signal, stop_all
from nudge.store.delivery_states import states_belonging_to
from nudge.store.directory import get_contact
from nudge.store.journey_references import (
    check_journey_references,
    published_referrer,
    unpublished_handover,
)
from nudge.store.journey_templates import import_template
from nudge.store.journeys import (
    contact_journeys,
    create_journey,
    delete_journey,
    enrollment_public,
    enrollments_of_journey,
    find_active_enrollment,
    get_journey,
    journey_definition_at,
    journey_public,
    journeys_page,
    mark_ended,
    save_journey_version,
    set_journey_status,
    versions_page,
)
from nudge.store.pagination import PageRequest
from nudge.store.tenants import Principal

router = APIRouter(prefix="/v1/journeys", tags=["journeys"])
# The inbox's view lives under the contact: what an agent has open is a conversation.
contact_router = APIRouter(prefix="/v1/contacts", tags=["journeys"])

JourneyId = Annotated[str, Path(max_length=64)]
ExternalId = Annotated[
    str, Path(min_length=1, max_length=200, description="The contact's id in your systems.")
]
# Lists of enrollments kept the default they had before every list was paged.
EnrollmentPageDep = Annotated[PageRequest, Depends(paging(default_limit=100))]


def _who(principal: Principal) -> str:
    return f"{principal.role} API key"


# Definitions ---------------------------------------------------------------------------------


@router.post("", status_code=status.HTTP_201_CREATED)
async def create(
    body: JourneyDefinition, principal: AdminDep, session: SessionDep
) -> JourneyPublic:
    """Create a journey as a `draft`; publish it to let contacts in."""
    # Journeys it hands over to must exist, not yet be published: menus refer to each other.
    await check_journey_references(session, principal.tenant_id, body, require_published=False)
    journey = await create_journey(session, principal.tenant_id, body)
    answer = await journey_public(session, journey)
    await session.commit()
    return answer


@router.get("")
async def read_all(principal: AdminDep, session: SessionDep, page: PageDep) -> Page[JourneyPublic]:
    """The tenant's journeys, oldest first."""
    journeys, next_cursor = await journeys_page(session, principal.tenant_id, page)
    return Page[JourneyPublic](
        items=[await journey_public(session, journey) for journey in journeys],
        next_cursor=next_cursor,
    )


@router.post("/import", status_code=status.HTTP_201_CREATED)
async def import_journeys(
    body: JourneyTemplate, principal: AdminDep, session: SessionDep
) -> list[JourneyPublic]:
    """Create and publish every journey of a template (e.g. `nudge/templates/chat-menu.json`)."""
    imported = await import_template(session, principal.tenant_id, body)
    await session.commit()
    return imported


@router.get("/{journey_id}")
async def read(journey_id: JourneyId, principal: AdminDep, session: SessionDep) -> JourneyPublic:
    """One journey, at its newest version."""
    return await journey_public(
        session, await get_journey(session, principal.tenant_id, journey_id)
    )


@router.put("/{journey_id}")
async def update(
    journey_id: JourneyId, body: JourneyDefinition, principal: AdminDep, session: SessionDep
) -> JourneyPublic:
    """Save a new version; only while the journey is not published (stop it first)."""
    journey = await get_journey(session, principal.tenant_id, journey_id)
    if journey.status == "published":
        raise Conflict(f"journey {journey.name!r} is published; stop it before editing it")
    await check_journey_references(
        session, principal.tenant_id, body, journey_id=journey.id, require_published=False
    )
    await save_journey_version(session, journey, body)
    answer = await journey_public(session, journey)
    await session.commit()
    return answer


@router.delete("/{journey_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove(journey_id: JourneyId, principal: AdminDep, session: SessionDep) -> None:
    """Delete a journey that is not published, with its versions and enrollments."""
    journey = await get_journey(session, principal.tenant_id, journey_id)
    if journey.status == "published":
        raise Conflict(f"journey {journey.name!r} is published; stop it before deleting it")
    referrer = await published_referrer(session, journey)
    if referrer is not None:
        raise Conflict(
            f"published journey {referrer[0]!r} hands contacts over to this one"
            f" (step {referrer[1]!r}); stop or change it first"
        )
    await delete_journey(session, journey)
    await session.commit()


@router.get("/{journey_id}/versions")
async def versions(
    journey_id: JourneyId, principal: AdminDep, session: SessionDep, page: PageDep
) -> Page[JourneyVersionPublic]:
    """The saved versions of the journey, oldest first."""
    journey = await get_journey(session, principal.tenant_id, journey_id)
    rows, next_cursor = await versions_page(session, journey.id, page)
    return Page[JourneyVersionPublic](
        items=[
            JourneyVersionPublic(**row.definition, version=row.version, created_at=row.created_at)
            for row in rows
        ],
        next_cursor=next_cursor,
    )


# Lifecycle -----------------------------------------------------------------------------------


@router.post("/{journey_id}/publish")
async def publish(journey_id: JourneyId, principal: AdminDep, session: SessionDep) -> JourneyPublic:
    """Let contacts in. Contacts ejected by an earlier stop are not enrolled again."""
    journey = await get_journey(session, principal.tenant_id, journey_id)
    definition = await journey_definition_at(session, journey.id, journey.version)
    # What it refers to may have changed since it was saved.
    await check_journey_references(
        session, principal.tenant_id, definition, journey_id=journey.id, require_published=False
    )
    if definition.trigger.type != "manual":
        problem = await unpublished_handover(session, journey, definition)
        if problem is not None:
            raise Conflict(problem)
    await set_journey_status(session, journey, "published")
    answer = await journey_public(session, journey)
    await session.commit()
    return answer


@router.post("/{journey_id}/stop", status_code=status.HTTP_202_ACCEPTED)
async def stop(
    journey_id: JourneyId,
    principal: AdminDep,
    session: SessionDep,
    relay: RelayDep,
    settings: SettingsDep,
    body: Annotated[JourneyStop, Body()] = JourneyStop(),
) -> JourneyPublic:
    """Stop the journey: every enrolled contact is ejected at once and never re-enrolled."""
    journey = await get_journey(session, principal.tenant_id, journey_id)
    # Not published any more, every enrollment ejected and the signalling run staged, in one
    # transaction: nobody enters while the stop runs, and a crash leaves no half-stop.
    await set_journey_status(session, journey, "stopped")
    entry = await stop_all(
        session,
        settings,
        tenant_slug=principal.tenant_slug,
        journey=journey,
        stop=Ending(by=_who(principal), reason=body.reason),
    )
    answer = await journey_public(session, journey)
    await session.commit()
    await relay.relay_written([entry])
    return answer


# Enrollments ---------------------------------------------------------------------------------


@router.post("/{journey_id}/enrollments", status_code=status.HTTP_201_CREATED)
async def create_enrollment(
    journey_id: JourneyId,
    body: EnrollmentCreate,
    principal: ServiceDep,
    session: SessionDep,
    sessions: SessionsDep,
    temporal: TemporalDep,
    settings: SettingsDep,
) -> EnrollmentPublic:
    """Enroll a contact in a journey with an `api` trigger; its run starts at once."""
    journey = await get_journey(session, principal.tenant_id, journey_id)
    if journey.trigger_type == "manual":
        raise Conflict(
            f"journey {journey.name!r} has a manual trigger: it is reachable only from"
            " another journey's trigger_journey step"
        )
    if journey.trigger_type != "api":
        raise Conflict(
            f"journey {journey.name!r} starts when a contact writes (trigger"
            f" {journey.trigger_type}); only journeys with an api trigger are enrolled by API"
        )
    enrollment = await enroll(
        temporal,
        sessions,
        settings,
        tenant_id=principal.tenant_id,
        tenant_slug=principal.tenant_slug,
        journey_id=journey.id,
        external_id=body.contact_id,
        variables=body.variables,
    )
    return enrollment_public(enrollment, journey.name, body.contact_id)


@router.get("/{journey_id}/enrollments")
async def read_enrollments(
    journey_id: JourneyId,
    principal: AdminDep,
    session: SessionDep,
    page: EnrollmentPageDep,
    state: Annotated[EnrollmentState | None, Query(description="Only these.")] = None,
) -> Page[EnrollmentPublic]:
    """The journey's enrollments, newest first: who is where, and how each one ended."""
    journey = await get_journey(session, principal.tenant_id, journey_id)
    items, next_cursor = await enrollments_of_journey(session, journey, state, page)
    return Page[EnrollmentPublic](
        items=await _with_deliveries(session, principal.tenant_id, items), next_cursor=next_cursor
    )


async def _with_deliveries(
    session: SessionDep, tenant_id: str, items: list[EnrollmentPublic]
) -> list[EnrollmentPublic]:
    sends = await states_belonging_to(session, tenant_id, [f"enrollment:{e.id}" for e in items])
    return [e.model_copy(update={"deliveries": sends.get(f"enrollment:{e.id}", [])}) for e in items]


# The inbox -----------------------------------------------------------------------------------


@contact_router.get("/{external_id}/journeys")
async def read_contact_journeys(
    external_id: ExternalId,
    principal: InboxDep,
    session: SessionDep,
    page: EnrollmentPageDep,
    include_ended: Annotated[
        bool, Query(description="Also the ended ones (who or what ended each, and why).")
    ] = False,
) -> Page[EnrollmentPublic]:
    """The contact's journeys in progress, oldest first, with the step each is at (what the
    inbox shows); with `include_ended`, every one, newest first."""
    contact = await get_contact(session, principal.tenant_id, external_id)
    items, next_cursor = await contact_journeys(
        session, principal.tenant_id, contact, page, include_ended=include_ended
    )
    return Page[EnrollmentPublic](
        items=await _with_deliveries(session, principal.tenant_id, items), next_cursor=next_cursor
    )


@contact_router.post(
    "/{external_id}/journeys/{journey_id}/stop", status_code=status.HTTP_202_ACCEPTED
)
async def stop_for_contact(
    external_id: ExternalId,
    journey_id: JourneyId,
    body: EnrollmentStop,
    principal: AgentDep,
    session: SessionDep,
    relay: RelayDep,
) -> EnrollmentPublic:
    """Stop one contact's journey; agents only where the journey's settings allow it."""
    journey = await get_journey(session, principal.tenant_id, journey_id)
    definition = await journey_definition_at(session, journey.id, journey.version)
    # The admin's current wish decides, whatever version the contact's run follows.
    if principal.role == "agent" and not definition.settings.allow_agents_stop:
        raise _forbidden(journey)
    contact = await get_contact(session, principal.tenant_id, external_id)
    enrollment = await find_active_enrollment(session, journey.id, contact.id)
    if enrollment is None:
        raise Conflict(f"contact {external_id!r} is not in journey {journey.name!r} now")
    by = f"{principal.role} {body.agent}"
    # Ended in the database first: each step checks it, so nothing more is sent after this;
    # the signal (committed with it) ends the run's wait.
    mark_ended(enrollment, "stopped", by, body.reason)
    entry = stage_signal(
        session,
        principal.tenant_id,
        principal.tenant_slug,
        journey.id,
        external_id,
        STOP_ENROLLMENT,
        Ending(by=by, reason=body.reason),
    )
    answer = enrollment_public(enrollment, journey.name, external_id)
    await session.commit()
    await relay.relay_written([entry])
    return answer


def _forbidden(journey: Journey) -> HTTPException:
    return HTTPException(
        status.HTTP_403_FORBIDDEN,
        detail=f"journey {journey.name!r} does not let agents stop it (settings.allow_agents_stop)",
    )
