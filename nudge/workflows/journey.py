"""One contact's journey: the pinned version's steps, one at a time, until it ends.

Exit conditions and stops arrive as signals and end the enrollment at once: a wait is cut
short, a step's activity still retrying is cancelled, and no later step runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, WorkflowAlreadyStartedError
from temporalio.workflow import ActivityCancellationType, ParentClosePolicy

from nudge.models.payloads import (
    AnswerInput,
    EndEnrollmentInput,
    Ending,
    EnrollmentInput,
    EnrollmentRef,
    HandOver,
    HoursCheckInput,
    JourneyAssignment,
    JourneyMessage,
    JourneyPlan,
    JourneyPosition,
    JourneyStepPlan,
    StepInput,
    StepOutcome,
    SurveyAnswerInput,
    SurveyInput,
)
from nudge.models.signals import JOURNEY_ASSIGNMENT, JOURNEY_MESSAGE, STOP_ENROLLMENT
from nudge.naming import (
    JOURNEY_WORKFLOW,
    Kind,
    journey_summary,
    journey_workflow_id,
    search_attributes,
)
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
    from nudge.activities.journey import JourneyActivities

EXIT_CONDITION = "exit condition"
# Runs from before this patch recorded their end with a (remote) activity.
LOCAL_END = "end-enrollment-locally"
# How many handled event ids a run remembers to drop repeats (a repeat comes within minutes).
SEEN_EVENTS = 500
OUTWARD_STEPS = frozenset({"send_message", "ask", "assign", "http_request", "survey"})
Outcome = tuple[str, Ending]  # (enrollment state, who or what ended it and why)
StepRunner = Callable[[JourneyStepPlan, int], Awaitable[str | None]]


@workflow.defn(name=JOURNEY_WORKFLOW)
class JourneyEnrollmentWorkflow:
    @workflow.init
    def __init__(self, request: EnrollmentInput) -> None:
        self._request = request
        self._plan: JourneyPlan | None = None
        self._early: list[JourneyMessage | JourneyAssignment] = []  # before the plan is known
        self._ended: Outcome | None = None
        self._asking = False
        self._reply: JourneyMessage | None = None
        # While handing over, events belong to the next journey: they are passed on to it.
        self._passing_on: list[tuple[str, BaseModel]] | None = None
        # Ids of the events handled, newest last: the outbox relays an event again when it
        # cannot tell whether Temporal took it, and a repeat must change nothing.
        self._seen: dict[str, None] = dict.fromkeys(request.seen_events)

    @workflow.run
    async def run(self, request: EnrollmentInput) -> str:
        plan = self._plan = await self._load_plan()
        for event in self._early:
            self._on_event(event)
        position = request.position or JourneyPosition(step=request.start_at or plan.steps[0].id)
        while position.step is not None and self._ended is None:
            if workflow.info().is_continue_as_new_suggested():
                carried = {"position": position, "seen_events": list(self._seen)}
                workflow.continue_as_new(request.model_copy(update=carried))
            step = self._step(position.step)
            if step is None:
                break
            visit = position.visits[step.id] = position.visits.get(step.id, 0) + 1
            position = self._move(position, step, await self._run_step(step, visit))
        return await self._finish()

    # Signals ---------------------------------------------------------------------------------

    @workflow.signal(name=JOURNEY_MESSAGE.name)
    def message(self, event: JourneyMessage) -> None:
        """A message from or to the contact: the reply to an `ask`, or an exit condition."""
        if self._is_new(f"message:{event.message_id}", event.enrollment_id):
            self._receive(JOURNEY_MESSAGE.name, event)

    @workflow.signal(name=JOURNEY_ASSIGNMENT.name)
    def assignment(self, event: JourneyAssignment) -> None:
        """The contact was assigned; a manual assignment can be an exit condition."""
        key = f"assignment:{event.event_id}" if event.event_id else None
        if self._is_new(key, event.enrollment_id):
            self._receive(JOURNEY_ASSIGNMENT.name, event)

    @workflow.signal(name=STOP_ENROLLMENT.name)
    def stop(self, stop: Ending) -> None:
        """An agent or an admin stopped this journey for the contact."""
        if self._passing_on is not None:
            self._passing_on.append((STOP_ENROLLMENT.name, stop))
        else:
            self._end("stopped", stop)

    def _is_new(self, key: str | None, enrollment_id: str | None) -> bool:
        """False for an event meant for another enrollment of the contact in this journey
        (an earlier one, same workflow id) and for one handled before."""
        if enrollment_id is not None and enrollment_id != self._request.enrollment_id:
            return False
        if key is None:
            return True
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > SEEN_EVENTS:
            del self._seen[next(iter(self._seen))]
        return True

    def _receive(self, signal: str, event: JourneyMessage | JourneyAssignment) -> None:
        if self._passing_on is not None:
            self._passing_on.append((signal, event))
        elif self._plan is None:
            self._early.append(event)
        else:
            self._on_event(event)

    def _on_event(self, event: JourneyMessage | JourneyAssignment) -> None:
        assert self._plan is not None
        if isinstance(event, JourneyMessage):
            if event.direction == "incoming" and self._asking and self._reply is None:
                self._reply = event
                return
            condition, reason = f"{event.direction}_message", f"{event.direction} message"
        elif event.manual:
            condition, reason = "manual_assignment", f"manual assignment to {event.assignee}"
        else:
            return
        if condition in self._plan.exit_conditions:
            self._end("exited", Ending(by=EXIT_CONDITION, reason=reason))

    def _end(self, state: str, stop: Ending) -> None:
        if self._ended is None:
            self._ended = (state, stop)

    # Moving through the steps ----------------------------------------------------------------

    async def _run_step(self, step: JourneyStepPlan, visit: int) -> str | None:
        """Runs one step; returns the id of the step that comes next (None: it ends here)."""
        runners: dict[str, StepRunner] = {
            "send_message": self._send_message,
            "wait": self._wait,
            "ask": self._ask,
            "branch": self._branch,
            "assign": self._assign,
            "update_contact": self._update_contact,
            "http_request": self._http_request,
            "trigger_journey": self._trigger_journey,
            "jump_to": self._jump_to,
            "end": self._end_step,
            "check_hours": self._check_hours,
            "survey": self._survey,
        }
        return await runners[step.type](step, visit)

    def _move(
        self, position: JourneyPosition, step: JourneyStepPlan, target: str | None
    ) -> JourneyPosition:
        """To ``target``, counting jumps: a `jump_to`, or any move back to an earlier step."""
        assert self._plan is not None
        if target is None or self._ended is not None:
            return position.model_copy(update={"step": None})
        ids = [s.id for s in self._plan.steps]
        jumped = step.type == "jump_to" or ids.index(target) <= ids.index(step.id)
        jumps = position.jumps + int(jumped)
        if jumps > self._plan.max_jumps:
            reason = (
                f"more than {self._plan.max_jumps} jumps (its max_jumps), the last one from"
                f" step {step.id} to {target}"
            )
            self._end("exited", Ending(by="journey", reason=reason))
            return position.model_copy(update={"step": None})
        return position.model_copy(update={"step": target, "jumps": jumps})

    def _step(self, step_id: str) -> JourneyStepPlan | None:
        assert self._plan is not None
        found = next((s for s in self._plan.steps if s.id == step_id), None)
        if found is None:
            reason = f"version {self._plan.version} has no step {step_id!r}"
            self._end("exited", Ending(by="journey", reason=reason))
        return found

    # The steps -----------------------------------------------------------------------------

    async def _send_message(self, step: JourneyStepPlan, visit: int) -> str | None:
        if not await self._in_window(step):
            return None
        self._say(f"At step {step.id}: sending a message")
        sent = await self._act(
            step, JourneyActivities.send_message, self._input(step, visit), "send the message"
        )
        return step.next if sent else None

    async def _in_window(self, step: JourneyStepPlan) -> bool:
        """Wait for the step's send window; False when the run was ended meanwhile."""
        await hold_for_window(
            step.send_window,
            tenant_id=self._request.tenant_id,
            enrollment_id=self._request.enrollment_id,
            ended=lambda: self._ended is not None,
            say=lambda what: self._say(f"At step {step.id}, {what}"),
            time_scale=self._request.time_scale,
        )
        return self._ended is None

    async def _wait(self, step: JourneyStepPlan, visit: int) -> str | None:
        assert step.minutes is not None
        delay = self._scaled(step.minutes)
        until = workflow.now() + delay
        recorded = await self._act(
            step, JourneyActivities.record_progress, self._input(step, visit, until), "record"
        )
        if not recorded:
            return None
        self._say(f"At step {step.id}, waiting until {_when(until)}")
        await wait_until(lambda: self._ended is not None, delay, f"wait {step.minutes} min")
        return step.next

    async def _ask(self, step: JourneyStepPlan, visit: int) -> str | None:
        assert step.timeout_minutes is not None
        if not await self._in_window(step):
            return None
        # The reply's time counts from the question's real send.
        until = workflow.now() + self._scaled(step.timeout_minutes)
        question = self._input(step, visit, until)
        reply = await self._put_question(
            step, JourneyActivities.send_message, question, "send the question"
        )
        if self._ended is not None:
            return None
        if reply is None:
            return step.on_timeout
        answer = AnswerInput(
            tenant_id=self._request.tenant_id,
            enrollment_id=self._request.enrollment_id,
            step_id=step.id,
            text=reply.text,
        )
        saved = await self._act(step, JourneyActivities.save_answer, answer, "save the reply")
        return step.next if saved else None

    async def _put_question(
        self, step: JourneyStepPlan, send: Any, question: StepInput, summary: str
    ) -> JourneyMessage | None:
        """Send a question and wait for its reply until ``question.waiting_until``; None
        when none came (in time, or before the run was ended: the caller checks that)."""
        assert question.waiting_until is not None
        until = question.waiting_until
        # From the moment the question leaves, an incoming message is its reply.
        self._asking, self._reply = True, None
        try:
            if not await self._act(step, send, question, summary):
                return None
            self._say(f"At step {step.id}, waiting for a reply until {_when(until)}")
            await wait_until(
                lambda: self._reply is not None or self._ended is not None,
                max(until - workflow.now(), timedelta(seconds=1)),
                f"reply within {step.timeout_minutes} min",
            )
        finally:
            self._asking = False
        return self._reply

    async def _survey(self, step: JourneyStepPlan, visit: int) -> str | None:
        """Ask, and keep the score; a reply that is no score may get one more try (the
        activity says so: it reads the step's `invalid_message`)."""
        assert step.timeout_minutes is not None
        if not await self._in_window(step):
            return None
        again = False
        while True:
            until = workflow.now() + self._scaled(step.timeout_minutes)
            question = SurveyInput(**self._input(step, visit, until).model_dump(), again=again)
            summary = "ask again" if again else "send the survey"
            reply = await self._put_question(step, JourneyActivities.send_survey, question, summary)
            if self._ended is not None:
                return None
            if reply is None:
                return step.on_timeout
            answer = SurveyAnswerInput(
                tenant_id=self._request.tenant_id,
                enrollment_id=self._request.enrollment_id,
                step_id=step.id,
                visit=visit,
                text=reply.text,
                again=again,
            )
            saved = await self._act(
                step, JourneyActivities.save_survey_answer, answer, "save the score"
            )
            if saved is None:
                return None
            if not saved.again:  # never twice: the answer to the re-ask is kept as it is
                return step.next
            again = True

    async def _branch(self, step: JourneyStepPlan, visit: int) -> str | None:
        # Conditions are evaluated in an activity, not here: they read the contact and the
        # variables from the database, and a Jinja2 template is neither guaranteed
        # deterministic nor safe to fail inside workflow code (a bad one would fail the
        # workflow task and retry forever instead of ending this enrollment with a reason).
        outcome = await self._act(
            step, JourneyActivities.evaluate_branch, self._input(step, visit), "evaluate"
        )
        return outcome.next if outcome else None

    async def _check_hours(self, step: JourneyStepPlan, visit: int) -> str | None:
        # Decided in an activity (the schedule is in the database) at the run's own time,
        # passed in: a replay, and a test server that skips time, see the same instant.
        check = HoursCheckInput(**self._input(step, visit).model_dump(), at=workflow.now())
        outcome = await self._act(
            step, JourneyActivities.check_hours, check, "check the business hours"
        )
        if outcome is None:
            return None
        self._say(f"At step {step.id}, {outcome.note}: on to step {outcome.next}")
        return outcome.next

    async def _assign(self, step: JourneyStepPlan, visit: int) -> str | None:
        self._say(f"At step {step.id}: asking the inbox to assign the contact")
        done = await self._act(step, JourneyActivities.assign, self._input(step, visit), "assign")
        return step.next if done else None

    async def _update_contact(self, step: JourneyStepPlan, visit: int) -> str | None:
        done = await self._act(
            step, JourneyActivities.update_contact, self._input(step, visit), "update the contact"
        )
        return step.next if done else None

    async def _http_request(self, step: JourneyStepPlan, visit: int) -> str | None:
        self._say(f"At step {step.id}: calling an integration")
        done = await self._act(
            step, JourneyActivities.http_request, self._input(step, visit), "call the integration"
        )
        return step.next if done else None

    async def _jump_to(self, step: JourneyStepPlan, visit: int) -> str | None:
        return step.target

    async def _end_step(self, step: JourneyStepPlan, visit: int) -> str | None:
        self._end("completed", Ending(by="journey", reason=f"reached the end step {step.id}"))
        return None

    async def _trigger_journey(self, step: JourneyStepPlan, visit: int) -> str | None:
        """Hand the contact over to another journey, started as a child that outlives us."""
        self._say(f"At step {step.id}: handing over to journey {step.journey_id}")
        self._passing_on = []
        handover = await self._bookkeeping(
            JourneyActivities.hand_over, self._input(step, visit), f"hand over ({step.id})"
        )
        if not handover.started:
            self._take_back_events()
            self._end("exited", Ending(by=f"step {step.id}", reason=handover.reason))
            return None
        try:
            child = await workflow.start_child_workflow(
                JourneyEnrollmentWorkflow.run,
                self._child_input(handover),
                id=journey_workflow_id(
                    self._request.tenant, handover.journey_id, self._request.external_id
                ),
                # Our run ends now; the contact goes on in the other journey.
                parent_close_policy=ParentClosePolicy.ABANDON,
                search_attributes=search_attributes(
                    self._request.tenant,
                    Kind.JOURNEY,
                    journey=handover.journey_id,
                    contact=self._request.external_id,
                ),
                static_summary=journey_summary(handover.journey_name, self._request.external_id),
            )
        except WorkflowAlreadyStartedError:
            await self._close_child(step, handover)
            return None
        for signal, event in self._passing_on:
            # Routed to this enrollment; the child is another one, so it goes on unaddressed.
            if isinstance(event, JourneyMessage | JourneyAssignment):
                event = event.model_copy(update={"enrollment_id": None})
            await child.signal(signal, event)
        at = f" at step {handover.start_at}" if handover.start_at else ""
        reason = f"handed over to {handover.journey_name!r}{at}"
        self._end("handed_over", Ending(by=f"step {step.id}", reason=reason))
        return None

    def _take_back_events(self) -> None:
        """The hand-over did not happen: what arrived meanwhile is ours after all."""
        events, self._passing_on = self._passing_on or [], None
        for signal, event in events:
            if isinstance(event, Ending):
                self.stop(event)
            elif isinstance(event, JourneyMessage | JourneyAssignment):
                self._receive(signal, event)

    async def _close_child(self, step: JourneyStepPlan, handover: HandOver) -> None:
        """The other journey's run for this contact is still closing: its new enrollment
        cannot start, so it is ended with the reason."""
        assert handover.enrollment_id is not None
        reason = "the contact's previous run of this journey was still closing"
        await self._bookkeeping(
            JourneyActivities.end_enrollment,
            EndEnrollmentInput(
                tenant_id=self._request.tenant_id,
                enrollment_id=handover.enrollment_id,
                state="exited",
                stop=Ending(
                    by=f"step {step.id} of journey {self._request.journey_id}", reason=reason
                ),
            ),
            "end the enrollment that could not start",
        )
        self._end("handed_over", Ending(by=f"step {step.id}", reason=f"hand-over failed: {reason}"))

    def _child_input(self, handover: HandOver) -> EnrollmentInput:
        assert handover.enrollment_id is not None
        return EnrollmentInput(
            tenant_id=self._request.tenant_id,
            tenant=self._request.tenant,
            journey_id=handover.journey_id,
            enrollment_id=handover.enrollment_id,
            external_id=self._request.external_id,
            start_at=handover.start_at,
            time_scale=self._request.time_scale,
        )

    # Activities ------------------------------------------------------------------------------

    async def _act(
        self, step: JourneyStepPlan, activity: Any, arg: BaseModel, summary: str
    ) -> StepOutcome | None:
        """Run a step's activity; None when the enrollment ends instead (an exit condition or
        a stop meanwhile, a failure, or a stop of the whole journey found in the database)."""
        # Calls to providers and integrations give up after their retries (the step fails
        # with the reason); database work is retried until the database is back.
        outward = step.type in OUTWARD_STEPS
        handle = workflow.start_activity_method(
            activity,
            arg,
            start_to_close_timeout=ATTEMPT_TIMEOUT if outward else BOOKKEEPING_TIMEOUT,
            # Sends and HTTP calls heartbeat while they wait: a killed worker's step is
            # retried after seconds, not after its start-to-close timeout.
            heartbeat_timeout=HEARTBEAT_TIMEOUT if outward else None,
            retry_policy=SEND_RETRY if outward else BOOKKEEPING_RETRY,
            summary=f"{summary} ({step.id})",
            # Left behind, not cancelled, when the enrollment ends meanwhile: the run closes
            # at once (which ends its retries), and a cancel request could race with the
            # activity's own completion. The activity checks the database before it sends.
            cancellation_type=ActivityCancellationType.ABANDON,
        )
        await workflow.wait_condition(lambda: handle.done() or self._ended is not None)
        if not handle.done():
            # An exit or a stop does not wait for a provider that is down.
            handle.cancel()
            await asyncio.gather(handle, return_exceptions=True)
            return None
        try:
            outcome: StepOutcome = handle.result()
        except ActivityError as err:
            cause = err.cause
            reason = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
            self._end("exited", Ending(by=f"step {step.id}", reason=f"failed: {reason}"))
            return None
        if not outcome.active:
            stop = Ending(by=outcome.ended_by or "someone", reason=outcome.end_reason or "")
            self._end(outcome.state, stop)
            return None
        return outcome

    async def _bookkeeping(self, activity: Any, arg: BaseModel, summary: str) -> Any:
        return await workflow.execute_activity_method(
            activity,
            arg,
            start_to_close_timeout=BOOKKEEPING_TIMEOUT,
            retry_policy=BOOKKEEPING_RETRY,
            summary=summary,
        )

    async def _load_plan(self) -> JourneyPlan:
        ref = EnrollmentRef(
            tenant_id=self._request.tenant_id, enrollment_id=self._request.enrollment_id
        )
        plan: JourneyPlan = await self._bookkeeping(
            JourneyActivities.load_journey_plan, ref, "load the journey version"
        )
        return plan

    async def _finish(self) -> str:
        state, stop = self._ended or (
            "completed",
            Ending(by="journey", reason="passed its last step"),
        )
        end = EndEnrollmentInput(
            tenant_id=self._request.tenant_id,
            enrollment_id=self._request.enrollment_id,
            state=state,
            stop=stop,
        )
        recorded: StepOutcome
        if workflow.patched(LOCAL_END):
            # One short write: as a local activity it runs inside the workflow task that the
            # exit's signal started, so an exit costs one task instead of three round trips.
            recorded = await workflow.execute_local_activity_method(
                JourneyActivities.end_enrollment,
                end,
                start_to_close_timeout=BOOKKEEPING_TIMEOUT,
                retry_policy=BOOKKEEPING_RETRY,
                summary=f"record the end: {state}",
            )
        else:
            recorded = await self._bookkeeping(
                JourneyActivities.end_enrollment, end, f"record the end: {state}"
            )
        # What the database holds wins: a stop of the whole journey may have come first.
        self._say(_ending(recorded.state, recorded.ended_by or "", recorded.end_reason or ""))
        return recorded.state

    # Small helpers ---------------------------------------------------------------------------

    def _input(self, step: JourneyStepPlan, visit: int, until: datetime | None = None) -> StepInput:
        return StepInput(
            tenant_id=self._request.tenant_id,
            enrollment_id=self._request.enrollment_id,
            step_id=step.id,
            visit=visit,
            # The enrollment id keeps a contact enrolled again from finding the old sends done.
            key_prefix=f"{workflow.info().workflow_id}/{self._request.enrollment_id}",
            waiting_until=until,
        )

    def _scaled(self, minutes: int) -> timedelta:
        return timedelta(minutes=minutes) / self._request.time_scale

    def _say(self, details: str) -> None:
        workflow.set_current_details(details)


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def _ending(state: str, by: str, reason: str) -> str:
    """The run's last details, in plain words."""
    if state == "stopped":
        return f"Stopped by {by}: {reason}"
    if by == EXIT_CONDITION:
        return f"Ended: exit condition {reason}"
    if state == "handed_over":
        return f"Ended: {reason}"
    if state == "completed":
        return f"Completed: {reason}"
    return f"Ended ({state}) by {by}: {reason}"
