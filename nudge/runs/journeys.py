"""Enrolling contacts in journeys, signalling their runs, and stopping a whole journey.

The enrollments table is written first (committed), then Temporal is told, so the database
always knows about every run that may exist.
"""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError

from nudge.errors import Conflict, InvalidInput
from nudge.models.db import transaction
from nudge.models.payloads import Ending, EnrollmentInput, StopAllInput
from nudge.models.signals import Signal
from nudge.models.tables import Enrollment, utcnow
from nudge.naming import (
    JOURNEY_STOP_ALL_WORKFLOW,
    JOURNEY_WORKFLOW,
    Kind,
    journey_stop_all_workflow_id,
    journey_summary,
    journey_workflow_id,
    search_attributes,
)
from nudge.runs.signals import signal_run
from nudge.settings import Settings
from nudge.store.directory import find_contact
from nudge.store.journeys import (
    create_enrollment,
    eject_active_enrollments,
    get_journey,
    journey_definition_at,
    mark_ended,
)

P = TypeVar("P")


async def enroll(
    client: Client,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    tenant_id: str,
    tenant_slug: str,
    journey_id: str,
    external_id: str,
    variables: dict[str, Any],
    start_at: str | None = None,
) -> Enrollment:
    """Create the enrollment (committed), then start its run.

    Raises ``Conflict`` when the journey is not published or the contact is in it already or
    was ejected from it, ``NotFound`` for an unknown journey and ``InvalidInput`` for an
    unknown contact or step.
    """
    async with transaction(sessions) as session:
        journey = await get_journey(session, tenant_id, journey_id)
        contact = await find_contact(session, tenant_id, external_id)
        if contact is None:
            raise InvalidInput.at(
                ("body", "contact_id"), f"no contact with external id {external_id!r}"
            )
        if start_at is not None:
            definition = await journey_definition_at(session, journey.id, journey.version)
            if all(step.id != start_at for step in definition.steps):
                raise InvalidInput.at(("body", "start_at"), f"no step {start_at!r}")
        enrollment = await create_enrollment(session, journey, contact, variables)
        name = journey.name
    request = EnrollmentInput(
        tenant_id=tenant_id,
        tenant=tenant_slug,
        journey_id=journey_id,
        enrollment_id=enrollment.id,
        external_id=external_id,
        start_at=start_at,
        time_scale=settings.time_scale,
    )
    try:
        await client.start_workflow(
            JOURNEY_WORKFLOW,
            request,
            id=journey_workflow_id(tenant_slug, journey_id, external_id),
            task_queue=settings.task_queue,
            search_attributes=search_attributes(
                tenant_slug, Kind.JOURNEY, journey=journey_id, contact=external_id
            ),
            static_summary=journey_summary(name, external_id),
        )
    except WorkflowAlreadyStartedError:
        # The contact's previous run of this journey has ended in the database and is
        # closing in Temporal: a moment later, enrolling works.
        reason = "the contact's previous run of this journey is still closing; try again"
        await _abandon(sessions, enrollment.id, reason)
        raise Conflict(reason) from None
    except Exception:
        await _abandon(sessions, enrollment.id, "its run could not be started")
        raise
    return enrollment


async def _abandon(
    sessions: async_sessionmaker[AsyncSession], enrollment_id: str, why: str
) -> None:
    async with transaction(sessions) as session:
        enrollment = await session.get_one(Enrollment, enrollment_id)
        mark_ended(enrollment, "exited", "enrollment", why)


async def signal_enrollment(
    client: Client,
    tenant_slug: str,
    journey_id: str,
    external_id: str,
    signal: Signal[P],
    arg: P,
) -> bool:
    """Signal the contact's run of the journey by its id; False when it is not running."""
    workflow_id = journey_workflow_id(tenant_slug, journey_id, external_id)
    return await signal_run(client, workflow_id, signal, arg)


async def stop_all(
    client: Client,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    tenant_id: str,
    tenant_slug: str,
    journey_id: str,
    stop: Ending,
) -> None:
    """Eject every active enrollment of the journey (committed: none of them sends again and
    none of those contacts is enrolled in it again), then return while a short workflow
    signals `stop` to each of their runs."""
    since = utcnow()
    async with transaction(sessions) as session:
        journey = await get_journey(session, tenant_id, journey_id)
        await eject_active_enrollments(session, journey_id, stop.by, stop.reason, since)
        name = journey.name
    await client.start_workflow(
        JOURNEY_STOP_ALL_WORKFLOW,
        StopAllInput(
            tenant_id=tenant_id, tenant=tenant_slug, journey_id=journey_id, stop=stop, since=since
        ),
        id=journey_stop_all_workflow_id(tenant_slug, journey_id, uuid.uuid4().hex[:12]),
        task_queue=settings.task_queue,
        search_attributes=search_attributes(tenant_slug, Kind.JOURNEY_STOP_ALL, journey=journey_id),
        static_summary=f"Stop journey {name}: eject every enrolled contact",
    )
