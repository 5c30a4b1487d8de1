"""A campaign: wait for its start, then send its rows in batches at the pace its mode sets.

The run holds ids and counters; rows are read by line from the database. Pause, resume and
cancel are written to the database by the API first (every send checks it) and signalled
here so the run stops waiting or scheduling. The history stays bounded: the run continues
as new every `BATCHES_PER_RUN` batches, carrying its cursor and counters.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow

from nudge.models.payloads import (
    CampaignBatchInput,
    CampaignBatchResult,
    CampaignControl,
    CampaignInput,
    CampaignPlan,
)
from nudge.naming import CAMPAIGN_WORKFLOW
from nudge.workflows.policies import (
    BOOKKEEPING_RETRY,
    BOOKKEEPING_TIMEOUT,
    HEARTBEAT_TIMEOUT,
    SEND_RETRY,
)
from nudge.workflows.timers import wait_until

with workflow.unsafe.imports_passed_through():
    from nudge.activities.campaign import CampaignActivities

BATCHES_PER_RUN = 200
# all_at_once: rows per batch; rate: seconds of sends per batch.
ALL_AT_ONCE_BATCH = 200
RATE_BATCH_SECONDS = 10
BATCH_TIMEOUT = timedelta(minutes=30)
MAX_BACK_OFF = timedelta(minutes=5)


@workflow.defn(name=CAMPAIGN_WORKFLOW)
class CampaignWorkflow:
    def __init__(self) -> None:
        self._paused = False
        self._cancelled = False
        self._edited = False
        # Batches in a row the provider asked to slow down: each waits twice as long.
        self._back_offs = 0

    @workflow.signal(name="pause")
    def pause(self, control: CampaignControl) -> None:
        self._paused = True

    @workflow.signal(name="resume")
    def resume(self, control: CampaignControl) -> None:
        self._paused = False

    @workflow.signal(name="cancel")
    def cancel(self, control: CampaignControl) -> None:
        self._cancelled = True

    @workflow.signal(name="edited")
    def edited(self, control: CampaignControl) -> None:
        self._edited = True

    @workflow.run
    async def run(self, state: CampaignInput) -> str:
        plan = await self._plan(state)
        if not state.started:
            plan = await self._until_start(state, plan)
            if self._cancelled or plan.status == "cancelled":
                return await self._end(state, "cancelled")
            status = await self._move(state, "running")
            state.started = True
            self._paused = self._paused or status == "paused"
        elif plan.status == "paused":
            self._paused = True
        while True:
            await workflow.wait_condition(lambda: not self._paused or self._cancelled)
            if self._cancelled:
                return await self._end(state, "cancelled")
            result = await self._batch(state, plan)
            state.after_line = result.last_line
            state.sent += result.sent
            state.failed += result.failed
            state.unknown += result.unknown
            state.batches += 1
            self._say(state, plan, "Running")
            if result.stopped_by == "cancelled":
                self._cancelled = True
                continue
            if result.stopped_by == "paused":
                self._paused = True
                self._say(state, plan, "Paused")
                continue
            if result.done:
                return await self._end(state, "completed")
            await self._pace(plan, result, state)
            if (
                state.batches % BATCHES_PER_RUN == 0
                or workflow.info().is_continue_as_new_suggested()
            ):
                workflow.continue_as_new(state)

    async def _until_start(self, state: CampaignInput, plan: CampaignPlan) -> CampaignPlan:
        """Sleep until the stored start; an edit wakes it to read the start again."""
        while plan.start_at is not None and not self._cancelled:
            wait = datetime.fromisoformat(plan.start_at) - workflow.now()
            if wait <= timedelta(0):
                break
            workflow.set_current_details(f"Scheduled for {plan.start_at} (UTC); 0/{plan.total}")
            self._edited = False
            woken = await wait_until(
                lambda: self._edited or self._cancelled,
                wait / state.time_scale,
                f"until the campaign starts at {plan.start_at}",
            )
            if not woken or not self._edited:
                break
            plan = await self._plan(state)
        return plan

    async def _batch(self, state: CampaignInput, plan: CampaignPlan) -> CampaignBatchResult:
        mode = plan.mode
        per_second = float(mode["per_second"]) if mode["type"] == "rate" else None
        if per_second is not None:
            limit = max(1, round(per_second * RATE_BATCH_SECONDS))
        elif mode["type"] == "gradual":
            limit = int(mode["batch_size"])
        else:
            limit = ALL_AT_ONCE_BATCH
        return await workflow.execute_activity_method(
            CampaignActivities.send_batch,
            CampaignBatchInput(
                tenant_id=state.tenant_id,
                campaign_id=state.campaign_id,
                after_line=state.after_line,
                limit=limit,
                per_second=per_second,
            ),
            start_to_close_timeout=BATCH_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=SEND_RETRY,
            summary=f"send up to {limit} rows after line {state.after_line}",
        )

    async def _pace(
        self, plan: CampaignPlan, result: CampaignBatchResult, state: CampaignInput
    ) -> None:
        """Wait before the next batch: the provider's back-off, or the gradual mode's gap.
        A cancel ends the wait (a pause is honoured by the next batch's check)."""
        wait = timedelta(0)
        if result.back_off_seconds is not None:
            wait = min(
                timedelta(seconds=result.back_off_seconds * 2**self._back_offs), MAX_BACK_OFF
            )
            self._back_offs += 1
            workflow.set_current_details(f"The provider asks to slow down: waiting {wait}")
        else:
            self._back_offs = 0
        if result.back_off_seconds is None and plan.mode["type"] == "gradual":
            wait = timedelta(minutes=int(plan.mode["every_minutes"])) / state.time_scale
        if wait > timedelta(0):
            await wait_until(lambda: self._cancelled, wait, "until the next batch")

    async def _end(self, state: CampaignInput, status: str) -> str:
        final = await self._move(state, status)
        outcome = f"{final.capitalize()}: {state.sent} sent, {state.failed} failed"
        if state.unknown:
            outcome += f", {state.unknown} unknown"
        workflow.set_current_details(outcome)
        return outcome

    def _say(self, state: CampaignInput, plan: CampaignPlan, what: str) -> None:
        done = state.sent + state.failed + state.unknown
        workflow.set_current_details(
            f"{what}: {done}/{plan.total} done ({state.sent} sent, {state.failed} failed),"
            f" after line {state.after_line}"
        )

    async def _plan(self, state: CampaignInput) -> CampaignPlan:
        return await workflow.execute_activity_method(
            CampaignActivities.load_plan,
            state.campaign_id,
            start_to_close_timeout=BOOKKEEPING_TIMEOUT,
            retry_policy=BOOKKEEPING_RETRY,
        )

    async def _move(self, state: CampaignInput, to: str) -> str:
        return await workflow.execute_activity_method(
            CampaignActivities.move,
            args=[state.campaign_id, to],
            start_to_close_timeout=BOOKKEEPING_TIMEOUT,
            retry_policy=BOOKKEEPING_RETRY,
        )
