"""Business hours: when a tenant or a queue is open, and whether it is open at a time."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Response, status
from pydantic import BeforeValidator

from nudge.api.deps import AdminDep, PageDep, SessionDep
from nudge.api.relay import RelayDep
from nudge.errors import InvalidInput
from nudge.models.business_hours import (
    BUSINESS_HOURS_EXAMPLE,
    EARLIEST_AT,
    LATEST_AT,
    BusinessHoursPublic,
    BusinessHoursPut,
    HoursStatus,
    status_at,
)
from nudge.models.channels import CHANNEL_SLUG
from nudge.models.pages import Page
from nudge.models.tables import BusinessHours, utcnow
from nudge.runs.closed_hours import stage_schedule_edited
from nudge.store.business_hours import (
    business_hours_page,
    delete_business_hours,
    get_business_hours,
    put_business_hours,
    schedule_of,
)

router = APIRouter(prefix="/v1/business-hours", tags=["business hours"])

ScheduleId = Annotated[
    str, Path(pattern=CHANNEL_SLUG, description="Your name for the schedule, e.g. `default`.")
]

# RFC 3339, as the OpenAPI `date-time` format has it: with its offset. Pydantic alone would
# also take a bare date, a time without offset (whose instant the zone would have to guess),
# or a number of seconds.
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: object) -> object:
    if isinstance(value, str) and not _DATE_TIME.fullmatch(value):
        raise ValueError(
            "not a date-time with its offset, e.g. 2026-03-01T09:00:00Z (in a URL, + is %2B)"
        )
    return value


At = Annotated[datetime, BeforeValidator(_rfc3339)]


def business_hours_public(row: BusinessHours) -> BusinessHoursPublic:
    return BusinessHoursPublic(**row.definition, id=row.slug, updated_at=row.updated_at)


@router.put("/{schedule_id}")
async def upsert_business_hours(
    schedule_id: ScheduleId,
    body: Annotated[
        BusinessHoursPut, Body(openapi_examples={"sao_paulo": {"value": BUSINESS_HOURS_EXAMPLE}})
    ],
    principal: AdminDep,
    session: SessionDep,
    relay: RelayDep,
) -> BusinessHoursPublic:
    """Create or replace a schedule. A tenant usually has `default`; queues may have theirs.
    Contacts waiting for it to open are told at the opening the new hours give."""
    row = await put_business_hours(session, principal.tenant_id, schedule_id, body)
    # A watch waiting for the old opening computes it again (none waiting: nothing happens).
    entry = stage_schedule_edited(session, principal.tenant_slug, row)
    await session.commit()
    await relay.relay_written([entry])
    return business_hours_public(row)


@router.get("")
async def read_business_hours_list(
    principal: AdminDep, session: SessionDep, page: PageDep
) -> Page[BusinessHoursPublic]:
    """The tenant's schedules, by id."""
    rows, next_cursor = await business_hours_page(session, principal.tenant_id, page)
    return Page[BusinessHoursPublic](
        items=[business_hours_public(row) for row in rows], next_cursor=next_cursor
    )


@router.get("/{schedule_id}")
async def read_business_hours(
    schedule_id: ScheduleId, principal: AdminDep, session: SessionDep
) -> BusinessHoursPublic:
    """One schedule."""
    row = await get_business_hours(session, principal.tenant_id, schedule_id)
    return business_hours_public(row)


@router.delete("/{schedule_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_business_hours(
    schedule_id: ScheduleId, principal: AdminDep, session: SessionDep
) -> Response:
    """Delete a schedule; refused (409, naming them) while follow-ups or journeys use it."""
    await delete_business_hours(session, principal.tenant_id, schedule_id)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{schedule_id}/status")
async def read_business_hours_status(
    schedule_id: ScheduleId,
    principal: AdminDep,
    session: SessionDep,
    at: Annotated[
        At | None,
        Query(
            description="The time to judge, with its offset (e.g. `2026-12-24T15:00:00-03:00`;"
            " in a URL, + is %2B), between 1900 and 8999; default now."
        ),
    ] = None,
) -> HoursStatus:
    """Open or closed at `at`, why when closed for a holiday, and when it opens or closes
    next (in the schedule's zone; `next_open` is null while open)."""
    row = await get_business_hours(session, principal.tenant_id, schedule_id)
    return status_at(schedule_of(row), _instant(at))


def _instant(at: datetime | None) -> datetime:
    """``at`` in UTC, within the range the computation takes (a 422 at `query.at` else)."""
    if at is None:
        return utcnow()
    try:
        instant = at.astimezone(UTC)
    except OverflowError:
        instant = None
    if instant is None or not EARLIEST_AT <= instant < LATEST_AT:
        raise InvalidInput.at(("query", "at"), "must be between 1900 and 8999")
    return instant
