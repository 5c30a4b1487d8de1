"""Business-hours schedules of one tenant, and who names them. Functions take the session and
never commit."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.errors import Conflict, NotFound
from nudge.models.business_hours import BusinessHoursPut
from nudge.models.tables import (
    BusinessHours,
    FollowUp,
    FollowUpVersion,
    Journey,
    JourneyVersion,
    utcnow,
)
from nudge.store.pagination import PageRequest, keyset_page

WHAT = "business hours"


async def find_business_hours(
    session: AsyncSession, tenant_id: str, slug: str
) -> BusinessHours | None:
    result = await session.execute(
        select(BusinessHours).where(
            BusinessHours.tenant_id == tenant_id, BusinessHours.slug == slug
        )
    )
    return result.scalar_one_or_none()


async def get_business_hours(session: AsyncSession, tenant_id: str, slug: str) -> BusinessHours:
    schedule = await find_business_hours(session, tenant_id, slug)
    if schedule is None:
        raise NotFound(WHAT, slug)
    return schedule


async def put_business_hours(
    session: AsyncSession, tenant_id: str, slug: str, data: BusinessHoursPut
) -> BusinessHours:
    """Create or replace the schedule: the definition is stored as PUT."""
    schedule = await find_business_hours(session, tenant_id, slug)
    if schedule is None:
        schedule = BusinessHours(tenant_id=tenant_id, slug=slug)
        session.add(schedule)
    schedule.definition = data.model_dump(mode="json", exclude_none=True)
    schedule.updated_at = utcnow()
    await session.flush()
    return schedule


def schedule_of(row: BusinessHours) -> BusinessHoursPut:
    return BusinessHoursPut.model_validate(row.definition)


async def business_hours_page(
    session: AsyncSession, tenant_id: str, page: PageRequest
) -> tuple[list[BusinessHours], str | None]:
    """The tenant's schedules, by id."""
    query = select(BusinessHours).where(BusinessHours.tenant_id == tenant_id)
    rows, next_cursor = await keyset_page(
        session, query, BusinessHours.slug, BusinessHours.id, page
    )
    return [schedule for (schedule,) in rows], next_cursor


async def delete_business_hours(session: AsyncSession, tenant_id: str, slug: str) -> None:
    """Delete the schedule (what contacts were told while it was closed goes with it).

    Raises ``NotFound``, and ``Conflict`` naming who uses it while anything does."""
    schedule = await get_business_hours(session, tenant_id, slug)
    users = await users_of(session, tenant_id, slug)
    if users:
        raise Conflict(f"{WHAT} {slug!r} is used by {', '.join(users)}; change them first")
    await session.execute(delete(BusinessHours).where(BusinessHours.id == schedule.id))


async def users_of(session: AsyncSession, tenant_id: str, slug: str) -> list[str]:
    """Who names the schedule: follow-ups through ``schedule.send_window.business_hours``,
    journey steps through ``send_window`` or ``check_hours`` (``.business_hours``), and
    `check_hours` steps through their own ``business_hours``.

    A best-effort scan of the current version's stored JSON, like the journeys' own
    references: it reads the fields by name, so it holds whatever the models later put
    there, and a definition it cannot read counts as naming nothing."""
    return [
        *await _followups_using(session, tenant_id, slug),
        *await _journey_steps_using(session, tenant_id, slug),
    ]


def _names(holder: Any, window: str, slug: str) -> bool:
    """``holder[window].business_hours == slug``, for any JSON at all."""
    found = holder.get(window) if isinstance(holder, dict) else None
    return isinstance(found, dict) and found.get("business_hours") == slug


def _checks_hours(step: Any, slug: str) -> bool:
    """A `check_hours` step names its schedule in a field of its own, ``business_hours``."""
    return isinstance(step, dict) and step.get("business_hours") == slug


async def _followups_using(session: AsyncSession, tenant_id: str, slug: str) -> list[str]:
    rows = await session.execute(
        select(FollowUp.name, FollowUpVersion.definition)
        .join(
            FollowUpVersion,
            (FollowUpVersion.followup_id == FollowUp.id)
            & (FollowUpVersion.version == FollowUp.version),
        )
        .where(FollowUp.tenant_id == tenant_id, FollowUp.status != "deleted")
        .order_by(FollowUp.name, FollowUp.id)
    )
    return [
        f"follow-up {name!r}"
        for name, definition in rows
        if isinstance(definition, dict) and _names(definition.get("schedule"), "send_window", slug)
    ]


async def _journey_steps_using(session: AsyncSession, tenant_id: str, slug: str) -> list[str]:
    rows = await session.execute(
        select(Journey.name, JourneyVersion.definition)
        .join(
            JourneyVersion,
            (JourneyVersion.journey_id == Journey.id) & (JourneyVersion.version == Journey.version),
        )
        .where(Journey.tenant_id == tenant_id)
        .order_by(Journey.name, Journey.id)
    )
    users: list[str] = []
    for name, definition in rows:
        steps = definition.get("steps") if isinstance(definition, dict) else None
        for step in steps if isinstance(steps, list) else []:
            if (
                _names(step, "send_window", slug)
                or _names(step, "check_hours", slug)
                or _checks_hours(step, slug)
            ):
                users.append(f"journey {name!r} step {step.get('id')!r}")
    return users
