"""The outbox: starts and signals that Temporal is still to be told.

An entry is added in the transaction of the change it belongs to, leased to the process
that added it (which relays it right after the commit), and taken over by any relay once
that lease runs out. Like every store function these never commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.models.tables import OutboxEntry, new_id, utcnow

Done = Literal["delivered", "started", "no_run", "gave_up"]

# How long the process that wrote an entry has to relay it before any relay may.
LEASE = timedelta(seconds=30)


@dataclass(frozen=True)
class Outcome:
    """What relaying one entry came to: done (with how), or to be tried again later."""

    entry_id: str
    outcome: Done | None = None  # None: try again later
    error: str | None = None
    retry_in: timedelta | None = None


def _payload(arg: BaseModel | None) -> dict[str, Any] | None:
    return None if arg is None else arg.model_dump(mode="json")


def add_start(
    session: AsyncSession,
    *,
    tenant_id: str,
    workflow: str,
    workflow_id: str,
    arg: BaseModel,
    options: dict[str, Any],
    event_key: str | None = None,
    relayed_inline: bool = True,
) -> OutboxEntry:
    """Start ``workflow`` with ``arg`` once the transaction commits. Without
    ``relayed_inline`` (a writer that does not relay its own entries) the workers' relays
    take it at once instead of after the writer's lease."""
    entry = _add(session, tenant_id, "start", workflow_id, workflow, arg, options, event_key, None)
    if not relayed_inline:
        entry.leased_until = None
    return entry


def add_signal(
    session: AsyncSession,
    *,
    tenant_id: str,
    workflow_id: str,
    signal: str,
    arg: BaseModel | None,
    event_key: str | None = None,
    wait_for_run: timedelta | None = None,
) -> OutboxEntry:
    """Signal the run ``workflow_id`` once the transaction commits; with ``wait_for_run``, a
    run that does not exist yet (its start is still in the outbox) is waited for that long."""
    until = utcnow() + wait_for_run if wait_for_run else None
    return _add(session, tenant_id, "signal", workflow_id, signal, arg, {}, event_key, until)


def _add(
    session: AsyncSession,
    tenant_id: str,
    action: str,
    workflow_id: str,
    name: str,
    arg: BaseModel | None,
    options: dict[str, Any],
    event_key: str | None,
    wait_for_run_until: datetime | None,
) -> OutboxEntry:
    now = utcnow()
    entry = OutboxEntry(
        id=new_id(),
        tenant_id=tenant_id,
        event_key=event_key,
        action=action,
        workflow_id=workflow_id,
        name=name,
        payload=_payload(arg),
        options=options,
        wait_for_run_until=wait_for_run_until,
        created_at=now,
        due_at=now,
        # The writer relays it right after its commit; the relays leave it alone meanwhile.
        leased_until=now + LEASE,
        tries=0,
    )
    session.add(entry)
    return entry


async def claim(session: AsyncSession, entry_ids: Sequence[str]) -> list[OutboxEntry]:
    """Lease the entries that are still to do and not leased by someone else (a retried
    event, a relay); the ones this caller may relay now."""
    if not entry_ids:
        return []
    now = utcnow()
    claimed = await session.execute(
        update(OutboxEntry)
        .where(
            OutboxEntry.id.in_(entry_ids),
            OutboxEntry.done_at.is_(None),
            or_(OutboxEntry.leased_until.is_(None), OutboxEntry.leased_until < now),
        )
        .values(leased_until=now + LEASE)
        .returning(OutboxEntry.id)
    )
    ids = [str(row[0]) for row in claimed]
    if not ids:
        return []
    rows = await session.execute(select(OutboxEntry).where(OutboxEntry.id.in_(ids)))
    return list(rows.scalars())


async def due(session: AsyncSession, limit: int) -> list[str]:
    """Ids of entries whose time has come and that nobody holds: left by a writer that
    failed or died, or waiting to be tried again."""
    now = utcnow()
    rows = await session.execute(
        select(OutboxEntry.id)
        .where(
            OutboxEntry.done_at.is_(None),
            OutboxEntry.due_at <= now,
            or_(OutboxEntry.leased_until.is_(None), OutboxEntry.leased_until < now),
        )
        .order_by(OutboxEntry.due_at)
        .limit(limit)
    )
    return [str(row[0]) for row in rows]


async def pending_of_event(session: AsyncSession, tenant_id: str, event_key: str) -> list[str]:
    """Ids of what an accepted event still has to tell Temporal."""
    rows = await session.execute(
        select(OutboxEntry.id).where(
            and_(
                OutboxEntry.tenant_id == tenant_id,
                OutboxEntry.event_key == event_key,
                OutboxEntry.done_at.is_(None),
            )
        )
    )
    return [str(row[0]) for row in rows]


async def has_event(session: AsyncSession, tenant_id: str, event_key: str) -> bool:
    """True when an event with this key was accepted before (it left entries here)."""
    found = await session.execute(
        select(OutboxEntry.id)
        .where(OutboxEntry.tenant_id == tenant_id, OutboxEntry.event_key == event_key)
        .limit(1)
    )
    return found.first() is not None


async def start_pending(session: AsyncSession, workflow_id: str) -> bool:
    """True while a start of ``workflow_id`` is still to be relayed."""
    found = await session.execute(
        select(OutboxEntry.id)
        .where(
            OutboxEntry.workflow_id == workflow_id,
            OutboxEntry.action == "start",
            OutboxEntry.done_at.is_(None),
        )
        .limit(1)
    )
    return found.first() is not None


async def record_outcomes(session: AsyncSession, outcomes: Sequence[Outcome]) -> None:
    """Close the entries that are done; put the others off until their next try."""
    now = utcnow()
    for outcome in outcomes:
        if outcome.outcome is not None:
            values: dict[str, Any] = {
                "done_at": now,
                "outcome": outcome.outcome,
                "leased_until": None,
                "last_error": outcome.error,
                "tries": OutboxEntry.tries + 1,
            }
        else:
            values = {
                "due_at": now + (outcome.retry_in or timedelta(seconds=1)),
                "leased_until": None,
                "last_error": (outcome.error or "")[:2000],
                "tries": OutboxEntry.tries + 1,
            }
        await session.execute(
            update(OutboxEntry)
            .where(OutboxEntry.id == outcome.entry_id, OutboxEntry.done_at.is_(None))
            .values(**values)
        )


async def pending_count(session: AsyncSession, tenant_id: str | None = None) -> int:
    """How many entries (of one tenant, or of all) are still to do: 0 when all is told."""
    query = select(func.count()).select_from(OutboxEntry).where(OutboxEntry.done_at.is_(None))
    if tenant_id is not None:
        query = query.where(OutboxEntry.tenant_id == tenant_id)
    found = await session.execute(query)
    return int(found.scalar_one())


async def purge_done(session: AsyncSession, older_than: timedelta) -> int:
    """Forget entries done long ago (they only ever served to finish their event)."""
    purged = await session.execute(
        delete(OutboxEntry).where(OutboxEntry.done_at < utcnow() - older_than)
    )
    return int(getattr(purged, "rowcount", 0) or 0)
