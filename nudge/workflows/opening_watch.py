"""Waits for a schedule to open, then tells every contact who asked to be told.

One run per schedule, started when the first contact of a closure says yes. It sleeps
until the next opening (a timer; an edit of the schedule wakes it to compute the opening
again), notifies in batches, and ends when nobody waits; the next yes starts it again.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow

from nudge.models.payloads import OpeningWatchInput
from nudge.naming import OPENING_WATCH_WORKFLOW
from nudge.workflows.policies import (
    BOOKKEEPING_RETRY,
    BOOKKEEPING_TIMEOUT,
    HEARTBEAT_TIMEOUT,
    SEND_RETRY,
)
from nudge.workflows.timers import wait_until

with workflow.unsafe.imports_passed_through():
    from nudge.activities.opening_watch import OpeningWatchActivities

NOTIFY_TIMEOUT = timedelta(minutes=30)
# A schedule that opens in no day of the horizon is looked at again this often.
NEVER_OPEN_RECHECK = timedelta(days=1)


@workflow.defn(name=OPENING_WATCH_WORKFLOW)
class OpeningWatchWorkflow:
    def __init__(self) -> None:
        self._edited = False

    @workflow.signal(name="edited")
    def edited(self) -> None:
        self._edited = True

    @workflow.run
    async def run(self, request: OpeningWatchInput) -> str:
        told = 0
        while True:
            # Planned from the run's own clock: it is what its timers follow.
            plan = await workflow.execute_activity_method(
                OpeningWatchActivities.plan_opening,
                args=[request.schedule_id, workflow.now().isoformat()],
                start_to_close_timeout=BOOKKEEPING_TIMEOUT,
                retry_policy=BOOKKEEPING_RETRY,
            )
            if plan.waiting == 0:
                outcome = f"Nobody waits for {request.schedule!r} to open ({told} told)"
                workflow.set_current_details(outcome)
                return outcome
            opens_at = datetime.fromisoformat(plan.opens_at) if plan.opens_at else None
            if opens_at is not None and opens_at <= workflow.now():
                told += await self._notify_everyone(request)
                continue
            # Woken by the timer or by an edit, it plans again: an opening that moved later
            # is waited for anew, never notified early.
            edited = await self._wait_for_opening(request, plan.opens_at, plan.waiting)
            if not edited and opens_at is not None and request.time_scale != 1:
                # Faster schedules (development): the run's clock never reaches the real
                # opening, so the timer's end is the opening.
                told += await self._notify_everyone(request)

    async def _wait_for_opening(
        self, request: OpeningWatchInput, opens_at: str | None, waiting: int
    ) -> bool:
        """Sleep until the opening; True when an edit woke it first."""
        if opens_at is None:
            wait = NEVER_OPEN_RECHECK
            workflow.set_current_details(
                f"{request.schedule!r} opens in no day ahead; {waiting} wait"
            )
        else:
            # A second late, so that the run's clock is inside the opening when it plans.
            wait = datetime.fromisoformat(opens_at) - workflow.now() + timedelta(seconds=1)
            workflow.set_current_details(
                f"Waiting for {request.schedule!r} to open at {opens_at} (UTC): {waiting}"
                " contacts to tell"
            )
        self._edited = False
        longest = max(wait / request.time_scale, timedelta(seconds=1))
        return await wait_until(lambda: self._edited, longest, "until it opens")

    async def _notify_everyone(self, request: OpeningWatchInput) -> int:
        told = 0
        while True:
            batch = await workflow.execute_activity_method(
                OpeningWatchActivities.notify_waiting,
                request.schedule_id,
                start_to_close_timeout=NOTIFY_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=SEND_RETRY,
                summary="tell who asked that service is available",
            )
            told += batch.notified
            workflow.set_current_details(f"Open: told {told} contacts")
            if not batch.more:
                return told
