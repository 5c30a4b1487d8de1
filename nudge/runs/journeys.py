"""Enrolling contacts in journeys, signalling their runs, and stopping a whole journey.

Each change is written with what Temporal must be told of it (outbox entries) in one
transaction; the entries are relayed after the commit (``nudge.runs.outbox``), so the
database knows of every run that may exist and no start or signal is lost.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from nudge.errors import InvalidInput
from nudge.models.db import transaction
from nudge.models.payloads import Ending, EnrollmentInput, StopAllInput
from nudge.models.signals import Signal
from nudge.models.tables import Enrollment, Journey, OutboxEntry, utcnow
from nudge.naming import (
    JOURNEY_STOP_ALL_WORKFLOW,
    JOURNEY_WORKFLOW,
    Kind,
    journey_stop_all_workflow_id,
    journey_summary,
    journey_workflow_id,
    search_attributes,
)
from nudge.runs.outbox import Relay, start_options
from nudge.runs.signals import signal_run
from nudge.settings import Settings
from nudge.store import outbox
from nudge.store.directory import find_contact
from nudge.store.journeys import (
    create_enrollment,
    eject_active_enrollments,
    get_journey,
    journey_definition_at,
    set_journey_status,
)

P = TypeVar("P")

# A signal to an enrollment whose run is not there yet waits this long for it (its start
# is relayed in a moment, or once Temporal is back; a hand-over starts it within seconds).
WAIT_FOR_RUN = timedelta(minutes=15)


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
    """Create the enrollment and its start (committed together), then start its run.

    Temporal being down delays the run, it does not lose it: the outbox relay starts it.
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
        await session.flush()
        entry = stage_start(
            session, settings, tenant_slug, journey, enrollment, external_id, start_at=start_at
        )
    await Relay(client, sessions).relay_written([entry])
    return enrollment


def stage_start(
    session: AsyncSession,
    settings: Settings,
    tenant_slug: str,
    journey: Journey,
    enrollment: Enrollment,
    external_id: str,
    *,
    start_at: str | None = None,
    event_key: str | None = None,
) -> OutboxEntry:
    """The enrollment's run, to be started once ``session`` commits (an outbox entry)."""
    request = EnrollmentInput(
        tenant_id=journey.tenant_id,
        tenant=tenant_slug,
        journey_id=journey.id,
        enrollment_id=enrollment.id,
        external_id=external_id,
        start_at=start_at,
        time_scale=settings.time_scale,
    )
    return outbox.add_start(
        session,
        tenant_id=journey.tenant_id,
        workflow=JOURNEY_WORKFLOW,
        workflow_id=journey_workflow_id(tenant_slug, journey.id, external_id),
        arg=request,
        options=start_options(
            settings.task_queue,
            search_attributes(tenant_slug, Kind.JOURNEY, journey=journey.id, contact=external_id),
            journey_summary(journey.name, external_id),
            enrollment_id=enrollment.id,
        ),
        event_key=event_key,
    )


def stage_signal(
    session: AsyncSession,
    tenant_id: str,
    tenant_slug: str,
    journey_id: str,
    external_id: str,
    signal: Signal[P],
    arg: P,
    *,
    event_key: str | None = None,
) -> OutboxEntry:
    """A signal to the contact's run of the journey, sent once ``session`` commits. The run
    may not exist yet (its start or a hand-over is under way): the signal waits for it."""
    assert isinstance(arg, BaseModel)
    return outbox.add_signal(
        session,
        tenant_id=tenant_id,
        workflow_id=journey_workflow_id(tenant_slug, journey_id, external_id),
        signal=signal.name,
        arg=arg,
        event_key=event_key,
        wait_for_run=WAIT_FOR_RUN,
    )


async def signal_enrollment(
    client: Client,
    tenant_slug: str,
    journey_id: str,
    external_id: str,
    signal: Signal[P],
    arg: P,
) -> bool:
    """Signal the contact's run of the journey at once, by its id; False when it is not
    running. (Changes the API makes go through the outbox instead: ``stage_signal``.)"""
    workflow_id = journey_workflow_id(tenant_slug, journey_id, external_id)
    return await signal_run(client, workflow_id, signal, arg)


async def stop_journey(
    client: Client,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    tenant_id: str,
    tenant_slug: str,
    journey_id: str,
    stop: Ending,
) -> Journey:
    """Stop a published journey: not published any more, every enrollment ejected and the
    signalling run staged in one transaction, then relayed."""
    async with transaction(sessions) as session:
        journey = await get_journey(session, tenant_id, journey_id)
        await set_journey_status(session, journey, "stopped")
        entry = await stop_all(
            session, settings, tenant_slug=tenant_slug, journey=journey, stop=stop
        )
    await Relay(client, sessions).relay_written([entry])
    return journey


async def stop_all(
    session: AsyncSession,
    settings: Settings,
    *,
    tenant_slug: str,
    journey: Journey,
    stop: Ending,
) -> OutboxEntry:
    """Eject every active enrollment of the journey (none of them sends again and none of
    those contacts is enrolled in it again) and stage the short workflow that signals `stop`
    to each of their runs; all of it commits with ``session``."""
    since = utcnow()
    await eject_active_enrollments(session, journey.id, stop.by, stop.reason, since)
    return outbox.add_start(
        session,
        tenant_id=journey.tenant_id,
        workflow=JOURNEY_STOP_ALL_WORKFLOW,
        workflow_id=journey_stop_all_workflow_id(tenant_slug, journey.id, uuid.uuid4().hex[:12]),
        arg=StopAllInput(
            tenant_id=journey.tenant_id,
            tenant=tenant_slug,
            journey_id=journey.id,
            stop=stop,
            since=since,
        ),
        options=start_options(
            settings.task_queue,
            search_attributes(tenant_slug, Kind.JOURNEY_STOP_ALL, journey=journey.id),
            f"Stop journey {journey.name}: eject every enrolled contact",
        ),
    )
