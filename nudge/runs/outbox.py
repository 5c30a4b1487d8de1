"""Telling Temporal what the outbox holds: right after the commit, and again until done.

Every "write the database, then tell Temporal" path writes its starts and signals as
outbox entries in its own transaction (``nudge.store.outbox``), then hands them to
:meth:`Relay.relay_written`. Whatever fails after the commit (Temporal down, the process
killed), the entries stay due and the relay loop of every worker (:func:`run_relay`) takes
them over once their lease runs out. Telling twice is harmless: a start finds its run (the
ids are deterministic) and workflows drop a repeated event by its id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from nudge.metrics import count_relayed
from nudge.models.db import read_only, transaction
from nudge.models.tables import OutboxEntry, utcnow
from nudge.store import outbox
from nudge.store.journeys import abandon_enrollment
from nudge.store.outbox import Outcome

log = logging.getLogger(__name__)

# Starts and signals in flight at once for one call (a message to dozens of journeys).
CONCURRENCY = 32
# How often an idle relay looks for entries left behind, and how many it takes at once.
RELAY_INTERVAL = timedelta(seconds=1)
RELAY_BATCH = 500
# How long a request waits for Temporal to take what it just wrote, before leaving it to
# the relay loop.
INLINE_BUDGET = timedelta(seconds=5)
# How long relayed entries wait to be closed together (see DoneMarker).
DONE_BATCH_WINDOW = timedelta(milliseconds=20)
# Done entries are kept a week (to see what happened), then purged.
KEEP_DONE = timedelta(days=7)
# An enrollment whose contact's previous run of the journey is still closing waits this
# long for it; then the enrollment is ended with the reason.
WAIT_FOR_PREVIOUS_RUN = timedelta(minutes=10)
# Refusals that no retry will change.
PERMANENT = frozenset({RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.PERMISSION_DENIED})


def start_options(
    task_queue: str,
    attributes: TypedSearchAttributes,
    summary: str,
    *,
    conflict: str = "fail",
    reuse: str | None = None,
    enrollment_id: str | None = None,
) -> dict[str, Any]:
    """A start's options as the outbox keeps them (JSON).

    ``conflict`` is ``fail`` or ``use_existing``; ``reuse`` ``reject_duplicate`` keeps a
    closed run's id from being used again. With ``enrollment_id`` the run carries it in its
    memo, so a relay that finds a run of that id knows whether it is this enrollment's.
    """
    options: dict[str, Any] = {
        "task_queue": task_queue,
        "search_attributes": {pair.key.name: pair.value for pair in attributes},
        "summary": summary,
        "conflict": conflict,
    }
    if reuse is not None:
        options["reuse"] = reuse
    if enrollment_id is not None:
        options["enrollment_id"] = enrollment_id
    return options


class DoneMarker:
    """Closes entries relayed by requests in batches, one transaction every few
    milliseconds instead of one per request: on the event path that is half its writes.

    A batch lost with its process (or a database that failed the write) only means its
    entries are relayed once more when their lease runs out: a start finds its run, and
    runs drop a repeated event. Entries to try again are recorded at once, not batched.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._pending: list[Outcome] = []
        self._flushing: asyncio.Task[None] | None = None

    def add(self, outcomes: Sequence[Outcome]) -> None:
        self._pending.extend(outcomes)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush_soon(), name="outbox done marker")

    async def _flush_soon(self) -> None:
        await asyncio.sleep(DONE_BATCH_WINDOW.total_seconds())
        await self.flush()

    async def flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                async with transaction(self._sessions) as session:
                    await outbox.record_outcomes(session, batch)
            except Exception:  # relayed again after their lease: harmless, see above
                log.exception("could not close %d relayed outbox entries", len(batch))

    async def close(self) -> None:
        if self._flushing is not None:
            await asyncio.gather(self._flushing, return_exceptions=True)
        await self.flush()


class Relay:
    """Relays outbox entries to Temporal and records what came of each."""

    def __init__(
        self,
        client: Client,
        sessions: async_sessionmaker[AsyncSession],
        done: DoneMarker | None = None,
    ) -> None:
        self._client = client
        self._sessions = sessions
        self._done = done

    async def relay_written(self, entries: Sequence[OutboxEntry]) -> list[Outcome]:
        """Relay entries this process has just committed (and so holds the lease of).

        Bounded: a request does not wait on a Temporal that answers slowly or not at all.
        What is not told within ``INLINE_BUDGET`` stays leased to this try and is taken
        over by the workers' relay when the lease lapses; a start or signal cut off midway
        is found done by then (a start finds its run, a signal is dropped by event id)."""
        try:
            return await asyncio.wait_for(
                self._relay(entries, by="inline"), INLINE_BUDGET.total_seconds()
            )
        except TimeoutError:
            log.warning("outbox: %d entries left to the relay (Temporal is slow)", len(entries))
            return []

    async def relay_ids(self, entry_ids: Sequence[str], *, by: str = "retry") -> list[Outcome]:
        """Relay the entries nobody else holds now (a client retrying its event)."""
        async with transaction(self._sessions) as session:
            entries = await outbox.claim(session, entry_ids)
        return await self._relay(entries, by=by)

    async def relay_due(self, limit: int = RELAY_BATCH) -> int:
        """One pass of the relay: every entry left behind or due again; how many it took."""
        async with read_only(self._sessions)() as session:
            ids = await outbox.due(session, limit)
        if not ids:
            return 0
        return len(await self.relay_ids(ids, by="relay"))

    async def _relay(self, entries: Sequence[OutboxEntry], *, by: str) -> list[Outcome]:
        if not entries:
            return []
        limit = asyncio.Semaphore(CONCURRENCY)

        async def one(entry: OutboxEntry) -> Outcome:
            async with limit:
                return await self._tell(entry)

        outcomes = list(await asyncio.gather(*(one(e) for e in entries)))
        later = outcomes
        if self._done is not None and by == "inline":
            self._done.add([o for o in outcomes if o.outcome in ("delivered", "started")])
            later = [o for o in outcomes if o.outcome not in ("delivered", "started")]
        if later:
            await self._record(entries, later)
        for outcome in outcomes:
            count_relayed("relay" if by == "relay" else "inline", outcome.outcome or "failed")
        return outcomes

    async def _record(self, entries: Sequence[OutboxEntry], outcomes: list[Outcome]) -> None:
        by_id = {entry.id: entry for entry in entries}
        async with transaction(self._sessions) as session:
            await outbox.record_outcomes(session, outcomes)
            for outcome in outcomes:
                entry = by_id[outcome.entry_id]
                if outcome.outcome == "gave_up" and entry.options.get("enrollment_id"):
                    await abandon_enrollment(
                        session, entry.options["enrollment_id"], outcome.error or "not started"
                    )

    async def _tell(self, entry: OutboxEntry) -> Outcome:
        try:
            if entry.action == "start":
                return await self._start(entry)
            return await self._signal(entry)
        except RPCError as exc:
            if exc.status in PERMANENT:
                log.error("outbox entry %s refused for good: %s", entry.id, exc)
                return Outcome(entry.id, "gave_up", error=str(exc))
            return self._later(entry, exc)
        except Exception as exc:  # Temporal unreachable, a timeout: try again later
            return self._later(entry, exc)

    def _later(self, entry: OutboxEntry, exc: BaseException) -> Outcome:
        # 1 s, 2 s, 4 s, … up to 30 s: an outage of minutes costs a few tries per entry.
        delay = timedelta(seconds=min(30, 2 ** min(entry.tries, 5)))
        log.warning(
            "outbox entry %s (%s %s) will be retried: %s",
            entry.id,
            entry.action,
            entry.workflow_id,
            exc,
        )
        return Outcome(entry.id, None, error=f"{type(exc).__name__}: {exc}", retry_in=delay)

    async def _start(self, entry: OutboxEntry) -> Outcome:
        options = entry.options
        enrollment_id = options.get("enrollment_id")
        try:
            await self._client.start_workflow(
                entry.name,
                entry.payload,
                id=entry.workflow_id,
                task_queue=options["task_queue"],
                search_attributes=_attributes(options["search_attributes"]),
                static_summary=options.get("summary"),
                id_conflict_policy=(
                    WorkflowIDConflictPolicy.USE_EXISTING
                    if options.get("conflict") == "use_existing"
                    else WorkflowIDConflictPolicy.FAIL
                ),
                id_reuse_policy=(
                    WorkflowIDReusePolicy.REJECT_DUPLICATE
                    if options.get("reuse") == "reject_duplicate"
                    else WorkflowIDReusePolicy.ALLOW_DUPLICATE
                ),
                memo={"enrollment_id": enrollment_id} if enrollment_id else None,
            )
        except WorkflowAlreadyStartedError:
            if enrollment_id is None or await self._runs_enrollment(entry, enrollment_id):
                return Outcome(entry.id, "started")  # told before: a retry, or a second relay
            return self._previous_run_closing(entry)
        return Outcome(entry.id, "started")

    async def _runs_enrollment(self, entry: OutboxEntry, enrollment_id: str) -> bool:
        description = await self._client.get_workflow_handle(entry.workflow_id).describe()
        found = await description.memo_value("enrollment_id", None)
        return bool(found == enrollment_id)

    def _previous_run_closing(self, entry: OutboxEntry) -> Outcome:
        """The contact's previous run of this journey has ended in the database and is
        closing in Temporal: this enrollment's run starts once it has."""
        if utcnow() - entry.created_at > WAIT_FOR_PREVIOUS_RUN:
            reason = "its run could not start: the contact's previous run of this journey is"
            reason += f" still open after {WAIT_FOR_PREVIOUS_RUN.seconds // 60} minutes"
            return Outcome(entry.id, "gave_up", error=reason)
        return Outcome(
            entry.id, None, error="previous run still open", retry_in=timedelta(seconds=2)
        )

    async def _signal(self, entry: OutboxEntry) -> Outcome:
        handle = self._client.get_workflow_handle(entry.workflow_id)
        try:
            if entry.payload is None:
                await handle.signal(entry.name)
            else:
                await handle.signal(entry.name, entry.payload)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            if entry.wait_for_run_until is not None and await self._run_is_coming(entry):
                # Its run's start is still to be relayed (an enrollment just made, a
                # hand-over under way): the signal waits for it rather than being dropped.
                return Outcome(entry.id, None, error="no run yet", retry_in=timedelta(seconds=1))
            return Outcome(entry.id, "no_run")
        return Outcome(entry.id, "delivered")

    async def _run_is_coming(self, entry: OutboxEntry) -> bool:
        assert entry.wait_for_run_until is not None
        if utcnow() < entry.wait_for_run_until:
            return True
        async with read_only(self._sessions)() as session:
            return await outbox.start_pending(session, entry.workflow_id)


def _attributes(stored: dict[str, str]) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [SearchAttributePair(SearchAttributeKey.for_keyword(k), v) for k, v in stored.items()]
    )


async def run_relay(
    relay: Relay, sessions: async_sessionmaker[AsyncSession], stop: asyncio.Event
) -> None:
    """The relay loop of a worker: take over what was left behind until ``stop`` is set."""
    purged_at = utcnow() - KEEP_DONE
    while not stop.is_set():
        try:
            taken = await relay.relay_due()
            if utcnow() - purged_at > timedelta(hours=1):
                async with transaction(sessions) as session:
                    await outbox.purge_done(session, KEEP_DONE)
                purged_at = utcnow()
        except Exception:  # the database is away: the loop goes on when it is back
            log.exception("outbox relay pass failed")
            taken = 0
        if taken >= RELAY_BATCH:
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RELAY_INTERVAL.total_seconds())
