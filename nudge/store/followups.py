"""Follow-up definitions, their versions, records and global attributes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.errors import NotFound
from nudge.models.followups import FollowUpDefinition
from nudge.models.tables import (
    FollowUp,
    FollowUpRecipient,
    FollowUpRecord,
    FollowUpVersion,
    GlobalAttribute,
    utcnow,
)


async def get_followup(session: AsyncSession, tenant_id: str, followup_id: str) -> FollowUp:
    followup = (
        await session.execute(
            select(FollowUp).where(FollowUp.tenant_id == tenant_id, FollowUp.id == followup_id)
        )
    ).scalar_one_or_none()
    if followup is None or followup.status == "deleted":
        raise NotFound("follow-up", followup_id)
    return followup


async def definition_at(
    session: AsyncSession, followup_id: str, version: int
) -> FollowUpDefinition:
    row = await session.get_one(FollowUpVersion, (followup_id, version))
    return FollowUpDefinition.model_validate(row.definition)


async def global_attributes(session: AsyncSession, tenant_id: str) -> dict[str, Any]:
    rows = await session.execute(
        select(GlobalAttribute).where(GlobalAttribute.tenant_id == tenant_id)
    )
    return {attribute.name: attribute.value for attribute in rows.scalars()}


async def set_global_attributes(
    session: AsyncSession, tenant_id: str, values: dict[str, Any]
) -> None:
    if not values:
        return
    existing = {
        row.name: row
        for row in (
            await session.execute(
                select(GlobalAttribute).where(
                    GlobalAttribute.tenant_id == tenant_id, GlobalAttribute.name.in_(values)
                )
            )
        ).scalars()
    }
    for name, value in values.items():
        row = existing.get(name)
        if row is None:
            session.add(GlobalAttribute(tenant_id=tenant_id, name=name, value=value))
        else:
            row.value, row.updated_at = value, utcnow()


@dataclass
class Reconciliation:
    """What one poll changed: records to start following, and records that went away."""

    to_start: list[FollowUpRecord] = field(default_factory=list)
    resolved: list[FollowUpRecord] = field(default_factory=list)


async def reconcile_records(
    session: AsyncSession,
    followup: FollowUp,
    records: dict[str, Any],
    *,
    resolve_missing: bool,
) -> Reconciliation:
    """Match this poll's records with earlier polls' by reconciliation id."""
    now = utcnow()
    known = {
        r.reconciliation_id: r
        for r in (
            await session.execute(
                select(FollowUpRecord).where(FollowUpRecord.followup_id == followup.id)
            )
        ).scalars()
    }
    result = Reconciliation()
    for rid, data in records.items():
        record = known.get(rid)
        if record is None:
            record = FollowUpRecord(
                tenant_id=followup.tenant_id,
                followup_id=followup.id,
                reconciliation_id=rid,
                state="following",
                version=followup.version,
                generation=1,
                workflow_started=False,
                attempts_made=0,
                data=data,
                local={},
                problems={},
                actions_done={},
                first_seen_at=now,
                last_seen_at=now,
            )
            session.add(record)
        elif record.state == "resolved":
            # It went away and came back: a new follow-up for it, on the newest version.
            _follow_again(record, followup.version, data, now)
        elif record.data != data:
            record.data = data
            record.last_seen_at = now
        if record.state == "following" and not record.workflow_started:
            result.to_start.append(record)
    if resolve_missing:
        for rid, record in known.items():
            if record.state == "following" and rid not in records:
                record.state = "resolved"
                record.ended_by = "poll"
                record.end_reason = "no longer returned by the integrations"
                record.ended_at = now
                record.next_attempt_at = None
                result.resolved.append(record)
    await session.flush()
    return result


def _follow_again(record: FollowUpRecord, version: int, data: Any, now: Any) -> None:
    record.state = "following"
    record.generation += 1
    record.version = version
    record.workflow_started = False
    record.attempts_made = 0
    record.data = data
    record.local = {}
    record.problems = {}
    record.actions_done = {}
    record.ended_by = record.end_reason = None
    record.ended_at = record.next_attempt_at = None
    record.last_seen_at = now


async def mark_workflows_started(session: AsyncSession, record_ids: Sequence[str]) -> None:
    """Remember that these records' runs were started, so no later poll starts them again."""
    for chunk in range(0, len(record_ids), 500):
        ids = record_ids[chunk : chunk + 500]
        rows = await session.execute(select(FollowUpRecord).where(FollowUpRecord.id.in_(ids)))
        for record in rows.scalars():
            record.workflow_started = True


async def stop_following_records(
    session: AsyncSession, tenant_id: str, followup_id: str, by: str, reason: str
) -> list[str]:
    """Mark every record of the follow-up still followed `stopped`; their reconciliation ids."""
    rows = await session.execute(
        select(FollowUpRecord).where(
            FollowUpRecord.followup_id == followup_id,
            FollowUpRecord.tenant_id == tenant_id,
            FollowUpRecord.state == "following",
        )
    )
    records = list(rows.scalars())
    now = utcnow()
    for record in records:
        record.state, record.ended_at, record.next_attempt_at = "stopped", now, None
        record.ended_by, record.end_reason = by, reason
    return [r.reconciliation_id for r in records]


async def record_state(session: AsyncSession, record_id: str) -> str:
    """The record's state as stored now (``following`` while its follow-up goes on)."""
    result = await session.execute(
        select(FollowUpRecord.state).where(FollowUpRecord.id == record_id)
    )
    return result.scalar_one()


async def add_record_recipient(session: AsyncSession, record_id: str, contact_id: str) -> None:
    """Remember that the contact was sent this record's follow-up (their replies end it)."""
    if await session.get(FollowUpRecipient, (record_id, contact_id)) is None:
        session.add(FollowUpRecipient(record_id=record_id, contact_id=contact_id))
