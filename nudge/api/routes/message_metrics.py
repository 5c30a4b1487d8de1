"""Message metrics: the tenant's sends over a period by campaign, template, sender or day,
and one campaign's figures and results (a CSV file, streamed)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import BeforeValidator

from nudge.api.deps import AdminDep, SessionDep
from nudge.api.routes.senders import CSV_MEDIA_TYPE, csv_cell
from nudge.errors import InvalidInput
from nudge.models.campaigns import CampaignMetrics
from nudge.models.message_metrics import CampaignResult, GroupBy, MessageMetricsList
from nudge.models.tables import utcnow
from nudge.store.message_metrics import (
    campaign,
    campaign_metrics,
    campaign_results,
    message_metrics,
)

router = APIRouter(prefix="/v1/metrics", tags=["metrics"])
campaign_router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"])

DEFAULT_SPAN = timedelta(days=30)
# One grouped scan of the period's deliveries: a year at most keeps it bounded.
MAX_SPAN = timedelta(days=366)
RESULT_COLUMNS = tuple(CampaignResult.model_fields)
# The export is sent in chunks of about this many characters, not a row at a time.
CHUNK_CHARS = 64 * 1024

CampaignId = Annotated[str, Path(max_length=64)]
# RFC 3339, as the OpenAPI `date-time` format has it: with its offset (`Z` for UTC). Pydantic
# alone would also take a bare date, a time without offset, or a number of seconds.
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: object) -> object:
    if isinstance(value, str) and not _DATE_TIME.fullmatch(value):
        raise ValueError(
            "not a date-time with its offset, e.g. 2026-03-01T00:00:00Z (in a URL, + is %2B)"
        )
    return value


DateTime = Annotated[datetime, BeforeValidator(_rfc3339)]


class CsvStream(StreamingResponse):
    """A CSV file sent as it is written."""

    media_type = CSV_MEDIA_TYPE


_CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "One row per campaign row, in line order, with a header row of"
        f" {', '.join(RESULT_COLUMNS)}.",
        "content": {CSV_MEDIA_TYPE: {"schema": {"type": "string"}}},
    }
}


@router.get("/messages")
async def read_message_metrics(
    principal: AdminDep,
    session: SessionDep,
    start: Annotated[
        DateTime | None,
        Query(
            alias="from",
            description="The period's start, included, with its offset (e.g."
            " `2026-03-01T00:00:00Z`); default 30 days before `to`.",
        ),
    ] = None,
    end: Annotated[
        DateTime | None,
        Query(alias="to", description="The period's end, excluded; default now."),
    ] = None,
    group_by: Annotated[
        GroupBy,
        Query(description="`campaign`, `template` (its name), `sender` (the channel) or `day`."),
    ] = "day",
) -> MessageMetricsList:
    """The messages created in the period, counted per group from their stored states. Each
    message counts once, as its first try (fallback tries are not counted again); `day` is
    the UTC date it was created. `from` must be before `to`, at most 366 days apart."""
    since, until = _period(start, end)
    items = await message_metrics(
        session, principal.tenant_id, start=since, end=until, group_by=group_by
    )
    return MessageMetricsList(group_by=group_by, start=since, end=until, items=items)


@campaign_router.get("/{campaign_id}/metrics")
async def read_campaign_metrics(
    campaign_id: CampaignId, principal: AdminDep, session: SessionDep
) -> CampaignMetrics:
    """The campaign's messages counted from their stored states, as receipts moved them."""
    return await campaign_metrics(session, principal.tenant_id, campaign_id)


@campaign_router.get(
    "/{campaign_id}/results.csv", response_class=CsvStream, responses=_CSV_RESPONSE
)
async def read_campaign_results(
    campaign_id: CampaignId, principal: AdminDep, session: SessionDep
) -> CsvStream:
    """Every row of the campaign and what became of it, as a CSV file sent while it is read.
    A cell starting with `=`, `+`, `-` or `@` gets a leading `'` (a phone number too), so a
    spreadsheet shows it and never runs it as a formula."""
    await campaign(session, principal.tenant_id, campaign_id)
    rows = campaign_results(session, principal.tenant_id, campaign_id)
    disposition = f'attachment; filename="campaign-{campaign_id}-results.csv"'
    return CsvStream(csv_chunks(rows), headers={"Content-Disposition": disposition})


def _period(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    until = _utc(end, "to") if end is not None else utcnow()
    if start is not None:
        since = _utc(start, "from")
    else:
        try:
            since = until - DEFAULT_SPAN
        except OverflowError:  # a `to` in the first days of year 1
            since = datetime.min.replace(tzinfo=UTC)
    if since >= until:
        raise InvalidInput.at(("query", "from"), "must be before `to`")
    if until - since > MAX_SPAN:
        raise InvalidInput.at(("query", "from"), f"at most {MAX_SPAN.days} days before `to`")
    return since, until


def _utc(value: datetime, field: str) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidInput.at(("query", field), "out of range once in UTC") from None


async def csv_chunks(rows: AsyncIterator[CampaignResult]) -> AsyncIterator[str]:
    """A header row, then a row per result, in chunks of about ``CHUNK_CHARS``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(RESULT_COLUMNS)
    async for row in rows:
        writer.writerow([_cell(getattr(row, name)) for name in RESULT_COLUMNS])
        if buffer.tell() >= CHUNK_CHARS:
            yield _drain(buffer)
    yield _drain(buffer)


def _cell(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return csv_cell(value)


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
