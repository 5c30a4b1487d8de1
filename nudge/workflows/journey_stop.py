"""Stopping a whole journey: every enrolled contact is ejected and their runs are stopped."""

from __future__ import annotations

from temporalio import workflow

from nudge.models.payloads import StopAllInput
from nudge.naming import JOURNEY_STOP_ALL_WORKFLOW
from nudge.workflows.policies import BOOKKEEPING_RETRY, STOP_TIMEOUT

with workflow.unsafe.imports_passed_through():
    from nudge.activities.journey import JourneyActivities


@workflow.defn(name=JOURNEY_STOP_ALL_WORKFLOW)
class JourneyStopAllWorkflow:
    @workflow.run
    async def run(self, request: StopAllInput) -> int:
        stop = request.stop
        workflow.set_current_details(f"Stopping every enrollment ({stop.by}: {stop.reason})")
        # The fan-out happens in the activity, so this history stays a few events long
        # however many contacts are enrolled.
        stopped: int = await workflow.execute_activity_method(
            JourneyActivities.eject_enrollments,
            request,
            start_to_close_timeout=STOP_TIMEOUT,
            retry_policy=BOOKKEEPING_RETRY,
            summary="eject every enrollment and stop its run",
        )
        workflow.set_current_details(f"Stopped {stopped} runs ({stop.by}: {stop.reason})")
        return stopped
