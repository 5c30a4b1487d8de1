"""Campaigns and their rows: what is queued, what was sent, and the campaign's status.

The rows live here, never in Temporal: the campaign's run holds ids and counters and asks
for the next rows by line. Every change of a campaign's status is a conditional UPDATE, so
a pause and the run's own completion cannot undo each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.errors import NotFound
from nudge.models.tables import Campaign, CampaignRow, Contact, new_id, utcnow
from nudge.store.pagination import PageRequest, keyset_page

# Rows inserted per statement (an executemany): big enough to be fast, small enough that
# SQLite's and PostgreSQL's parameter limits never matter.
INSERT_CHUNK = 2_000
LOOKUP_CHUNK = 500
RATE_WINDOW = timedelta(seconds=60)
# Statuses a campaign can be moved to, from which.
MOVES: dict[str, tuple[str, ...]] = {
    "running": ("scheduled",),
    "paused": ("scheduled", "running"),
    "resumed": ("paused",),
    "cancelled": ("scheduled", "running", "paused"),
    "completed": ("running",),
}
OPEN_STATES = ("scheduled", "running", "paused")


@dataclass(frozen=True)
class NewRow:
    line: int
    contact_id: str
    channel: str
    values: dict[str, str]


@dataclass(frozen=True)
class RowCounts:
    queued: int = 0
    sent: int = 0
    failed: int = 0
    unknown: int = 0
    skipped: int = 0
    sent_last_minute: int = 0

    @property
    def total(self) -> int:
        return self.queued + self.sent + self.failed + self.unknown + self.skipped


async def add_campaign(
    session: AsyncSession,
    *,
    tenant_id: str,
    name: str,
    definition: dict[str, Any],
    start_at: datetime | None,
    total: int,
    duplicates: int,
) -> Campaign:
    campaign = Campaign(
        id=new_id(),
        tenant_id=tenant_id,
        name=name,
        status="scheduled",
        definition=definition,
        start_at=start_at,
        total=total,
        duplicates=duplicates,
    )
    session.add(campaign)
    await session.flush()
    return campaign


async def add_rows(session: AsyncSession, campaign_id: str, rows: Sequence[NewRow]) -> None:
    """Every row, queued, in a few multi-row statements."""
    for start in range(0, len(rows), INSERT_CHUNK):
        chunk = rows[start : start + INSERT_CHUNK]
        await session.execute(
            insert(CampaignRow),
            [
                {
                    "campaign_id": campaign_id,
                    "line": row.line,
                    "contact_id": row.contact_id,
                    "channel": row.channel,
                    "values": row.values,
                    "status": "queued",
                }
                for row in chunk
            ],
        )


async def contacts_for_phones(
    session: AsyncSession, tenant_id: str, phones: Iterable[str]
) -> dict[str, str]:
    """The contact id of every phone; numbers nobody has become contacts (the number is
    their external id), as a directory of a messaging product is expected to grow."""
    wanted = list(dict.fromkeys(phones))
    found: dict[str, str] = {}
    for start in range(0, len(wanted), LOOKUP_CHUNK):
        chunk = wanted[start : start + LOOKUP_CHUNK]
        rows = await session.execute(
            select(Contact.phone, Contact.id)
            .where(Contact.tenant_id == tenant_id, Contact.phone.in_(chunk))
            .order_by(Contact.created_at.desc())
        )
        found.update({phone: contact_id for phone, contact_id in rows if phone is not None})
    missing = [phone for phone in wanted if phone not in found]
    # A number may be someone's external id already (an earlier campaign made them).
    for start in range(0, len(missing), LOOKUP_CHUNK):
        chunk = missing[start : start + LOOKUP_CHUNK]
        rows = await session.execute(
            select(Contact.external_id, Contact.id).where(
                Contact.tenant_id == tenant_id, Contact.external_id.in_(chunk)
            )
        )
        found.update({str(external_id): str(contact_id) for external_id, contact_id in rows})
    new = [phone for phone in missing if phone not in found]
    now = utcnow()
    created = [
        {
            "id": new_id(),
            "tenant_id": tenant_id,
            "external_id": phone,
            "phone": phone,
            "attributes": {},
            "created_at": now,
            "updated_at": now,
        }
        for phone in new
    ]
    for start in range(0, len(created), INSERT_CHUNK):
        await session.execute(insert(Contact), created[start : start + INSERT_CHUNK])
    found.update({str(row["external_id"]): str(row["id"]) for row in created})
    return found


async def contacts_by_external_id(
    session: AsyncSession, tenant_id: str, external_ids: Iterable[str]
) -> dict[str, str]:
    wanted = list(dict.fromkeys(external_ids))
    found: dict[str, str] = {}
    for start in range(0, len(wanted), LOOKUP_CHUNK):
        rows = await session.execute(
            select(Contact.external_id, Contact.id).where(
                Contact.tenant_id == tenant_id,
                Contact.external_id.in_(wanted[start : start + LOOKUP_CHUNK]),
            )
        )
        found.update({str(external_id): str(contact_id) for external_id, contact_id in rows})
    return found


async def find_campaign(session: AsyncSession, tenant_id: str, campaign_id: str) -> Campaign | None:
    found = await session.execute(
        select(Campaign).where(Campaign.tenant_id == tenant_id, Campaign.id == campaign_id)
    )
    return found.scalar_one_or_none()


async def get_campaign(session: AsyncSession, tenant_id: str, campaign_id: str) -> Campaign:
    campaign = await find_campaign(session, tenant_id, campaign_id)
    if campaign is None:
        raise NotFound("campaign", campaign_id)
    return campaign


async def campaigns_page(
    session: AsyncSession, tenant_id: str, page: PageRequest
) -> tuple[list[Campaign], str | None]:
    """The tenant's campaigns, newest first."""
    query = select(Campaign).where(Campaign.tenant_id == tenant_id)
    rows, next_cursor = await keyset_page(
        session, query, Campaign.created_at, Campaign.id, page, descending=True
    )
    return [row[0] for row in rows], next_cursor


async def move(session: AsyncSession, campaign_id: str, to: str) -> bool:
    """Move the campaign to ``to`` (``resumed`` means back to running) if its status
    allows; False when it did not (another move won, or it had ended)."""
    now = utcnow()
    values: dict[str, Any] = {"status": "running" if to == "resumed" else to, "updated_at": now}
    if to == "running":
        values["started_at"] = now
    if to in ("cancelled", "completed"):
        values["ended_at"] = now
    result = await session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.status.in_(MOVES[to]))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    return bool(result.rowcount)


async def status_of(session: AsyncSession, campaign_id: str) -> str | None:
    found = await session.execute(select(Campaign.status).where(Campaign.id == campaign_id))
    status: str | None = found.scalar_one_or_none()
    return status


async def queued_rows(
    session: AsyncSession, campaign_id: str, after_line: int, limit: int
) -> list[CampaignRow]:
    """The next queued rows after ``after_line``, in line order."""
    rows = await session.execute(
        select(CampaignRow)
        .where(
            CampaignRow.campaign_id == campaign_id,
            CampaignRow.status == "queued",
            CampaignRow.line > after_line,
        )
        .order_by(CampaignRow.line)
        .limit(limit)
    )
    return list(rows.scalars())


async def mark_row(
    session: AsyncSession,
    campaign_id: str,
    line: int,
    status: str,
    *,
    delivery_id: str | None = None,
    error: str | None = None,
) -> None:
    now = utcnow()
    values: dict[str, Any] = {"status": status, "error": error, "updated_at": now}
    if delivery_id is not None:
        values["delivery_id"] = delivery_id
    if status == "sent":
        values["sent_at"] = now
    await session.execute(
        update(CampaignRow)
        .where(
            and_(
                CampaignRow.campaign_id == campaign_id,
                CampaignRow.line == line,
                CampaignRow.status == "queued",
            )
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )


async def skip_queued(session: AsyncSession, campaign_id: str) -> None:
    """A cancelled campaign's rows still queued: never sent."""
    await session.execute(
        update(CampaignRow)
        .where(CampaignRow.campaign_id == campaign_id, CampaignRow.status == "queued")
        .values(status="skipped", updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )


async def row_counts(session: AsyncSession, campaign_id: str) -> RowCounts:
    rows = await session.execute(
        select(CampaignRow.status, func.count())
        .where(CampaignRow.campaign_id == campaign_id)
        .group_by(CampaignRow.status)
    )
    counts = {status: int(count) for status, count in rows}
    recent = await session.execute(
        select(func.count()).where(
            CampaignRow.campaign_id == campaign_id,
            CampaignRow.sent_at >= utcnow() - RATE_WINDOW,
        )
    )
    return RowCounts(
        queued=counts.get("queued", 0),
        sent=counts.get("sent", 0),
        failed=counts.get("failed", 0),
        unknown=counts.get("unknown", 0),
        skipped=counts.get("skipped", 0),
        sent_last_minute=int(recent.scalar_one()),
    )


async def contacts_of(session: AsyncSession, contact_ids: Iterable[str]) -> dict[str, Contact]:
    ids = list(set(contact_ids))
    rows = await session.execute(select(Contact).where(Contact.id.in_(ids)))
    return {contact.id: contact for contact in rows.scalars()}
