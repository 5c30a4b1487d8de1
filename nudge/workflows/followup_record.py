"""One record's follow-up: attempt 1 at once, then every `notify_minutes`, until it ends."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

from nudge.models.payloads import (
    ActionsInput,
    AttemptInput,
    AttemptResult,
    ButtonPress,
    Ending,
    EndRecordInput,
    RecordInput,
    RecordPlan,
)
from nudge.models.signals import PRESS_BUTTON, REPLY_TO_RECORD, RESOLVE_RECORD, STOP_RECORD
from nudge.naming import FOLLOWUP_RECORD_WORKFLOW
from nudge.workflows.policies import (
    ATTEMPT_TIMEOUT,
    BOOKKEEPING_RETRY,
    BOOKKEEPING_TIMEOUT,
    HEARTBEAT_TIMEOUT,
    SEND_RETRY,
)
from nudge.workflows.send_windows import hold_for_window
from nudge.workflows.timers import wait_until

with workflow.unsafe.imports_passed_through():
    from nudge.activities.followup_record import FollowUpRecordActivities

# Patches: runs started before them replay as they ran.
STORED_END = "record-ends-on-stored-end"
FOLLOW_NEWER = "record-continues-as-newer-generation"


@workflow.defn(name=FOLLOWUP_RECORD_WORKFLOW)
class FollowUpRecordWorkflow:
    @workflow.init
    def __init__(self, request: RecordInput) -> None:
        # Known before any signal is handled: signals meant for another generation of the
        # record (same workflow id, an earlier or later run) are ignored.
        self._generation = request.generation
        self._ended: tuple[str, Ending] | None = None
        self._unknown = 0
        self._button: ButtonPress | None = None
        self._plan: RecordPlan | None = None

    @workflow.run
    async def run(self, request: RecordInput) -> str:
        plan = self._plan = await workflow.execute_activity_method(
            FollowUpRecordActivities.load_record_plan,
            request,
            start_to_close_timeout=BOOKKEEPING_TIMEOUT,
            retry_policy=BOOKKEEPING_RETRY,
            summary="load the definition version",
        )
        interval = timedelta(minutes=plan.notify_minutes) / request.time_scale
        for attempt in range(1, plan.attempts + 1):
            if self._ended:
                break
            await hold_for_window(
                plan.send_window,
                tenant_id=request.tenant_id,
                record_id=request.record_id,
                ended=lambda: self._ended is not None,
                say=_attempt_details(attempt, plan.attempts),
                time_scale=request.time_scale,
            )
            if self._ended:
                break
            # The next attempt counts from this one's real send, however long it waited.
            last = attempt == plan.attempts
            next_at = None if last else workflow.now() + interval
            workflow.set_current_details(f"Attempt {attempt} of {plan.attempts}")
            result = await self._attempt(request, attempt, plan.attempts, next_at)
            if result is not None and result.stopped and self._ended is None:
                self._stored_end(result)
            unknown = _unknown_note(result.unknown if result else 0)
            self._unknown += result.unknown if result else 0
            if unknown:
                workflow.set_current_details(f"Attempt {attempt} of {plan.attempts}: {unknown}")
            if not last and not self._ended:
                workflow.set_current_details(
                    f"Attempt {attempt} of {plan.attempts} sent"
                    + (f" ({unknown})" if unknown else "")
                    + f"; next at {next_at:%Y-%m-%d %H:%M} UTC"
                )
                await wait_until(
                    lambda: self._ended is not None,
                    interval,
                    f"until attempt {attempt + 1} of {plan.attempts}",
                )
        if self._button is not None:
            await self._actions(request, f"button:{self._button.action}", plan.attempts)
        elif self._ended is None:
            await self._actions(request, "after_all_attempts", plan.attempts)
        state, stop = self._ended or (
            "completed",
            Ending(by="schedule", reason=f"all {plan.attempts} attempts made"),
        )
        ended = await workflow.execute_activity_method(
            FollowUpRecordActivities.end_record,
            EndRecordInput(
                tenant_id=request.tenant_id,
                record_id=request.record_id,
                state=state,
                stop=stop,
                generation=request.generation,
            ),
            start_to_close_timeout=BOOKKEEPING_TIMEOUT,
            retry_policy=BOOKKEEPING_RETRY,
            summary=f"record the end: {state}",
        )
        unknown = _unknown_note(self._unknown)
        workflow.set_current_details(
            f"Ended ({state}) by {stop.by}: {stop.reason}" + (f"; {unknown}" if unknown else "")
        )
        if ended is not None and ended.generation is not None and workflow.patched(FOLLOW_NEWER):
            # The record came back while this run was open, so its new start found this run:
            # this run goes on as the new generation's (its own keys, its own signals).
            workflow.continue_as_new(
                request.model_copy(
                    update={
                        "generation": ended.generation,
                        "version": ended.version or request.version,
                    }
                )
            )
        return state

    @workflow.signal(name=RESOLVE_RECORD.name)
    def resolve(self, stop: Ending) -> None:
        """The record no longer appears in the external system."""
        if self._mine(stop.generation):
            self._end("resolved", stop)

    @workflow.signal(name=STOP_RECORD.name)
    def stop(self, stop: Ending) -> None:
        """Someone stopped this record (API) or its whole follow-up (deactivation)."""
        if self._mine(stop.generation):
            self._end("stopped", stop)

    @workflow.signal(name=REPLY_TO_RECORD.name)
    def reply(self, stop: Ending) -> None:
        """A recipient answered; ends the follow-up when the definition says so."""
        if not self._mine(stop.generation):
            return
        if self._plan is None or self._plan.on_reply:
            # `completed`, not `resolved`: the record is still in the external system, and a
            # resolved record that the next poll still finds would be followed anew.
            self._end("completed", stop)

    @workflow.signal(name=PRESS_BUTTON.name)
    def press(self, press: ButtonPress) -> None:
        """A recipient pressed a card button: its actions run, then the follow-up ends."""
        if self._ended is None and self._mine(press.generation):
            self._button = press
            self._end("completed", Ending(by=press.by, reason=f"pressed {press.action!r}"))

    def _end(self, state: str, stop: Ending) -> None:
        if self._ended is None:
            self._ended = (state, stop)

    def _stored_end(self, result: AttemptResult) -> None:
        """The attempt found the record ended in the database (a stop whose signal has not
        arrived, or may never), or followed by a newer generation: so the run ends too."""
        if not workflow.patched(STORED_END):
            return
        if result.superseded:
            self._end("superseded", Ending(by="poll", reason="the record was followed again"))
        elif result.state is not None and result.ended is not None:
            self._end(result.state, result.ended)

    def _mine(self, generation: int | None) -> bool:
        """False for a signal meant for another generation (None: sent without one)."""
        return generation is None or generation == self._generation

    async def _attempt(
        self, request: RecordInput, attempt: int, attempts: int, next_at: datetime | None
    ) -> AttemptResult | None:
        try:
            return await workflow.execute_activity_method(
                FollowUpRecordActivities.run_attempt,
                AttemptInput(
                    tenant_id=request.tenant_id,
                    record_id=request.record_id,
                    attempt=attempt,
                    attempts=attempts,
                    key_prefix=self._key_prefix(request),
                    next_attempt_at=next_at,
                    generation=request.generation,
                ),
                start_to_close_timeout=ATTEMPT_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=SEND_RETRY,
                summary=f"attempt {attempt} of {attempts}",
            )
        except ActivityError as err:
            # One failed attempt (provider down for long, bad template) does not end the
            # follow-up: the failure is in the history and the record, the next attempt runs.
            workflow.logger.warning("attempt %s failed: %s", attempt, err.cause or err)
            return None

    @staticmethod
    def _key_prefix(request: RecordInput) -> str:
        """Idempotency keys start with the workflow id; a record followed again gets its own."""
        workflow_id = workflow.info().workflow_id
        return workflow_id if request.generation == 1 else f"{workflow_id}#{request.generation}"

    async def _actions(self, request: RecordInput, stage: str, attempt: int) -> None:
        await workflow.execute_activity_method(
            FollowUpRecordActivities.run_actions,
            ActionsInput(
                tenant_id=request.tenant_id,
                record_id=request.record_id,
                stage=stage,
                attempt=attempt,
                generation=request.generation,
            ),
            start_to_close_timeout=ATTEMPT_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=SEND_RETRY,
            summary=stage.replace("_", " ").replace("button:", "button "),
        )


def _unknown_note(count: int) -> str:
    """What the run's details say of sends whose outcome is unknown, or nothing."""
    if not count:
        return ""
    return f"{count} send{'' if count == 1 else 's'} unknown (not resent)"


def _attempt_details(attempt: int, attempts: int) -> Callable[[str], None]:
    def say(what: str) -> None:
        workflow.set_current_details(f"Attempt {attempt} of {attempts}: {what}")

    return say
