"""Message metrics counted from stored delivery states, and a campaign's results.

Each message is counted once: its first try (`fallback_of IS NULL`), in the state that
try is in. A fallback try is another send of the same message, so it is left out; the
message stays under the sender and template it was first sent with, and a fallback that
got through does not turn its failed first try into a delivered one. (Following every
chain to its last try would take a recursive query per grouping; the deliveries list
shows the chains.)

The figures, for each group (see ``CampaignMetrics``):

- total: every first try, whatever its state (`sending`, `retrying` and `unknown` too);
- sent: those that left: `sent`, `delivered`, `read`, `undelivered`, and `failed` after the
  provider took it (`sent_at` or `failed_at` set); a send refused at once never left;
- delivered: `delivered` or `read` (a read message was delivered);
- read: `read`;
- failed: `failed` or `undelivered`, refused at the send or reported by a receipt;
- replied: `replied_at` set; reply_rate = replied / delivered, null when none was delivered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, SQLColumnExpression, String, and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import Label
from sqlalchemy.sql.functions import FunctionElement

from nudge.errors import NotFound
from nudge.models.campaigns import CampaignMetrics, MessageMetricsRow
from nudge.models.message_metrics import CampaignResult, GroupBy
from nudge.models.tables import Campaign, CampaignRow, Contact, Delivery

CAMPAIGN_OWNER = "campaign:"
DELIVERED = ("delivered", "read")
FAILED = ("failed", "undelivered")
# Rows of a campaign's results read per query: the export streams, one page at a time.
RESULTS_PAGE = 1000


class utc_day(FunctionElement[str]):
    """A timestamp's UTC date as `YYYY-MM-DD` text. PostgreSQL's `date()` of a timestamptz
    is the date in the session's time zone, so it converts to UTC first; SQLite stores UTC
    text already, whose `date()` is that text's date."""

    type = String()
    name = "utc_day"
    inherit_cache = True


@compiles(utc_day, "sqlite")
def _sqlite_day(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    return f"date({compiler.process(element.clauses, **kw)})"


@compiles(utc_day, "postgresql")
def _postgresql_day(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    timestamp = compiler.process(element.clauses, **kw)
    return f"to_char(({timestamp}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


def _campaign_of(belongs_to: SQLColumnExpression[str | None]) -> ColumnElement[str | None]:
    # `substr` compares case-sensitively on both databases (SQLite's LIKE does not).
    prefix = len(CAMPAIGN_OWNER)
    return case(
        (func.substr(belongs_to, 1, prefix) == CAMPAIGN_OWNER, func.substr(belongs_to, prefix + 1)),
        else_=None,
    )


def _group_key(group_by: GroupBy) -> SQLColumnExpression[Any]:
    keys: dict[GroupBy, SQLColumnExpression[Any]] = {
        "campaign": _campaign_of(Delivery.belongs_to),
        "template": Delivery.template,
        "sender": Delivery.channel,
        "day": utc_day(Delivery.created_at),
    }
    return keys[group_by]


def _count(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.count(case((condition, 1)))


def _figures(status: Any, sent_at: Any, failed_at: Any, replied_at: Any) -> list[Label[int]]:
    """The counts of ``CampaignMetrics`` as aggregates of these columns (a table's or a
    subquery's)."""
    left = or_(
        status.in_(("sent", *DELIVERED, "undelivered")),
        and_(status == "failed", or_(sent_at.is_not(None), failed_at.is_not(None))),
    )
    return [
        func.count().label("total"),
        _count(left).label("sent"),
        _count(status.in_(DELIVERED)).label("delivered"),
        _count(status == "read").label("read"),
        _count(status.in_(FAILED)).label("failed"),
        func.count(replied_at).label("replied"),
    ]


def _metrics(row: Any) -> dict[str, Any]:
    delivered: int = row.delivered
    # Four decimals, as the senders' rates.
    rate = round(row.replied / delivered, 4) if delivered else None
    return {
        "total": row.total,
        "sent": row.sent,
        "delivered": delivered,
        "read": row.read,
        "failed": row.failed,
        "replied": row.replied,
        "reply_rate": rate,
    }


async def message_metrics(
    session: AsyncSession,
    tenant_id: str,
    *,
    start: datetime,
    end: datetime,
    group_by: GroupBy,
) -> list[MessageMetricsRow]:
    """The tenant's messages created in [start, end), counted per group, the null key last."""
    # The key is computed in a subquery and grouped on outside: PostgreSQL cannot tell that
    # an expression with bound parameters in GROUP BY is the one selected.
    keyed = (
        select(
            _group_key(group_by).label("key"),
            Delivery.status,
            Delivery.sent_at,
            Delivery.failed_at,
            Delivery.replied_at,
        )
        .where(
            Delivery.tenant_id == tenant_id,
            Delivery.created_at >= start,
            Delivery.created_at < end,
            Delivery.fallback_of.is_(None),
        )
        .subquery()
    )
    c = keyed.c
    rows = await session.execute(
        select(c.key, *_figures(c.status, c.sent_at, c.failed_at, c.replied_at))
        .group_by(c.key)
        .order_by(c.key.asc().nulls_last())
    )
    return [MessageMetricsRow(key=row.key, **_metrics(row)) for row in rows]


async def campaign(session: AsyncSession, tenant_id: str, campaign_id: str) -> Campaign:
    """The tenant's campaign; NotFound for an unknown one or another tenant's."""
    found = await session.scalar(
        select(Campaign).where(Campaign.tenant_id == tenant_id, Campaign.id == campaign_id)
    )
    if found is None:
        raise NotFound("campaign", campaign_id)
    return found


async def campaign_metrics(
    session: AsyncSession, tenant_id: str, campaign_id: str
) -> CampaignMetrics:
    """The campaign's messages counted, all of them (no period); NotFound as ``campaign``."""
    await campaign(session, tenant_id, campaign_id)
    d = Delivery
    row = (
        await session.execute(
            select(*_figures(d.status, d.sent_at, d.failed_at, d.replied_at)).where(
                d.tenant_id == tenant_id,
                d.belongs_to == f"{CAMPAIGN_OWNER}{campaign_id}",
                d.fallback_of.is_(None),
            )
        )
    ).one()
    return CampaignMetrics(**_metrics(row))


async def campaign_results(
    session: AsyncSession, tenant_id: str, campaign_id: str, *, page_size: int | None = None
) -> AsyncIterator[CampaignResult]:
    """The campaign's rows in line order, each with its delivery and contact; nothing for
    an unknown campaign or another tenant's (check with ``campaign`` first for a 404).

    Read ``page_size`` (default ``RESULTS_PAGE``) rows at a time, keyset on the line, so a
    million rows never sit in memory. The session's transaction is ended after each page
    (committed: give it a session that only reads), so none stays open for the whole export."""
    found = await session.scalar(
        select(Campaign.definition).where(
            Campaign.tenant_id == tenant_id, Campaign.id == campaign_id
        )
    )
    if found is None:
        return
    by_external_id = found.get("recipient_kind") == "external_id"
    limit = page_size or RESULTS_PAGE
    after = 0
    while True:
        page = await _results_page(session, tenant_id, campaign_id, after, limit)
        await session.commit()
        for row in page:
            yield _result(row, by_external_id)
        if len(page) < limit:
            return
        after = page[-1].line


async def _results_page(
    session: AsyncSession, tenant_id: str, campaign_id: str, after: int, limit: int
) -> list[Any]:
    rows = await session.execute(
        select(
            CampaignRow.line,
            CampaignRow.channel,
            CampaignRow.status,
            CampaignRow.error.label("row_error"),
            Contact.phone,
            Contact.external_id,
            Delivery.status.label("delivery_status"),
            Delivery.sent_at,
            Delivery.delivered_at,
            Delivery.read_at,
            Delivery.failed_at,
            Delivery.replied_at,
            Delivery.error,
        )
        .join(Contact, Contact.id == CampaignRow.contact_id)
        .outerjoin(
            Delivery, and_(Delivery.id == CampaignRow.delivery_id, Delivery.tenant_id == tenant_id)
        )
        .where(
            CampaignRow.campaign_id == campaign_id,
            CampaignRow.line > after,
            Contact.tenant_id == tenant_id,
        )
        .order_by(CampaignRow.line)
        .limit(limit)
    )
    return list(rows)


def _result(row: Any, by_external_id: bool) -> CampaignResult:
    recipient = row.external_id if by_external_id else (row.phone or row.external_id)
    return CampaignResult(
        line=row.line,
        recipient=recipient,
        channel=row.channel,
        status=row.status,
        delivery_status=row.delivery_status,
        sent_at=row.sent_at,
        delivered_at=row.delivered_at,
        read_at=row.read_at,
        failed_at=row.failed_at,
        replied_at=row.replied_at,
        error=row.error or row.row_error,
    )
