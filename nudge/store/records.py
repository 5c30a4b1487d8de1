"""Follow-up records as the API and events see them. Functions take the session and never commit."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.errors import NotFound
from nudge.models.payloads import Ending
from nudge.models.tables import FollowUpRecipient, FollowUpRecord, utcnow
from nudge.store.pagination import PageRequest, keyset_page


async def records_page(
    session: AsyncSession, tenant_id: str, followup_id: str, page: PageRequest
) -> tuple[list[FollowUpRecord], str | None]:
    """The follow-up's records, in the order they were first found."""
    query = select(FollowUpRecord).where(
        FollowUpRecord.tenant_id == tenant_id, FollowUpRecord.followup_id == followup_id
    )
    rows, next_cursor = await keyset_page(
        session, query, FollowUpRecord.first_seen_at, FollowUpRecord.reconciliation_id, page
    )
    return [record for (record,) in rows], next_cursor


async def find_record(
    session: AsyncSession, tenant_id: str, followup_id: str, reconciliation_id: str
) -> FollowUpRecord | None:
    rows = await session.execute(
        select(FollowUpRecord).where(
            FollowUpRecord.tenant_id == tenant_id,
            FollowUpRecord.followup_id == followup_id,
            FollowUpRecord.reconciliation_id == reconciliation_id,
        )
    )
    return rows.scalar_one_or_none()


async def get_record(
    session: AsyncSession, tenant_id: str, followup_id: str, reconciliation_id: str
) -> FollowUpRecord:
    record = await find_record(session, tenant_id, followup_id, reconciliation_id)
    if record is None:
        raise NotFound("record", reconciliation_id)
    return record


async def records_reminding(session: AsyncSession, contact_id: str) -> list[FollowUpRecord]:
    """Every record still reminding the contact."""
    rows = await session.execute(
        select(FollowUpRecord)
        .join(FollowUpRecipient, FollowUpRecipient.record_id == FollowUpRecord.id)
        .where(FollowUpRecipient.contact_id == contact_id, FollowUpRecord.state == "following")
    )
    # A contact reminded through two channels is a recipient twice: one record each.
    return list({record.id: record for record in rows.scalars()}.values())


def end_record(record: FollowUpRecord, state: str, ending: Ending) -> None:
    """Record who or what ended a record's reminders and why (its run checks this before
    each send, so nothing more leaves once the caller commits)."""
    record.state, record.ended_by, record.end_reason = state, ending.by, ending.reason
    record.ended_at, record.next_attempt_at = utcnow(), None


async def stop_following(
    session: AsyncSession, tenant_id: str, followup_id: str, ending: Ending
) -> list[FollowUpRecord]:
    """End every record of the follow-up still followed as `stopped` (its follow-up was
    deactivated or deleted); the records."""
    rows = await session.execute(
        select(FollowUpRecord).where(
            FollowUpRecord.tenant_id == tenant_id,
            FollowUpRecord.followup_id == followup_id,
            FollowUpRecord.state == "following",
        )
    )
    records = list(rows.scalars())
    for record in records:
        end_record(record, "stopped", ending)
    return records
