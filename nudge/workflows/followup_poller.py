"""A follow-up's poller: poll the external system, then wait, for as long as it is active."""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

from nudge.models.payloads import Ending, PollerInput, PollInput, PollResult, StopRecordsInput
from nudge.models.signals import POLL_NOW, STOP_POLLER
from nudge.naming import FOLLOWUP_POLLER_WORKFLOW
from nudge.workflows.policies import BOOKKEEPING_RETRY, POLL_RETRY, POLL_TIMEOUT, STOP_TIMEOUT
from nudge.workflows.timers import wait_until

with workflow.unsafe.imports_passed_through():
    from nudge.activities.followup_poller import FollowUpPollerActivities


@workflow.defn(name=FOLLOWUP_POLLER_WORKFLOW)
class FollowUpPollerWorkflow:
    def __init__(self) -> None:
        self._poll_requested = False
        self._stop: Ending | None = None
        self._last_failure = ""

    @workflow.run
    async def run(self, request: PollerInput) -> str:
        polls = 0
        while self._stop is None:
            self._poll_requested = False
            polls += 1
            result = await self._poll(request)
            minutes = result.polling_minutes if result else 10
            delay = timedelta(minutes=minutes) / request.time_scale
            workflow.set_current_details(self._details(result, workflow.now() + delay))
            await wait_until(
                lambda: self._poll_requested or self._stop is not None,
                delay,
                f"next poll in {minutes} min",
            )
            if self._stop is None and (
                polls >= request.polls_per_run or workflow.info().is_continue_as_new_suggested()
            ):
                workflow.continue_as_new(request)
        await workflow.execute_activity_method(
            FollowUpPollerActivities.stop_followup_records,
            StopRecordsInput(
                tenant_id=request.tenant_id,
                tenant=request.tenant,
                followup_id=request.followup_id,
                stop=self._stop,
            ),
            start_to_close_timeout=STOP_TIMEOUT,
            retry_policy=BOOKKEEPING_RETRY,
            summary="stop every record",
        )
        workflow.set_current_details(f"Stopped by {self._stop.by}: {self._stop.reason}")
        return f"stopped by {self._stop.by}: {self._stop.reason}"

    @workflow.signal(name=POLL_NOW.name)
    def poll_now(self) -> None:
        """Poll at once (also sent when a new version is saved)."""
        self._poll_requested = True

    @workflow.signal(name=STOP_POLLER.name)
    def stop(self, stop: Ending) -> None:
        self._stop = stop

    async def _poll(self, request: PollerInput) -> PollResult | None:
        try:
            return await workflow.execute_activity_method(
                FollowUpPollerActivities.poll_followup,
                PollInput(
                    tenant_id=request.tenant_id,
                    tenant=request.tenant,
                    followup_id=request.followup_id,
                    time_scale=request.time_scale,
                ),
                start_to_close_timeout=POLL_TIMEOUT,
                heartbeat_timeout=timedelta(minutes=1),
                retry_policy=POLL_RETRY,
                summary="poll the integrations and reconcile records",
            )
        except ActivityError as err:
            # A failed poll leaves every record as it was; the next poll tries again.
            workflow.logger.warning("poll failed: %s", err.cause or err)
            self._last_failure = str(err.cause or err)
            return None

    def _details(self, result: PollResult | None, next_poll: datetime) -> str:
        at = f"next poll at {next_poll:%Y-%m-%d %H:%M:%S} UTC"
        if result is None:
            return f"Last poll failed: {self._last_failure}; {at}"
        return (
            f"{result.name}: {result.found} records ({result.new} new, {result.resolved} resolved,"
            f" {result.skipped} skipped without id); {at}"
        )
