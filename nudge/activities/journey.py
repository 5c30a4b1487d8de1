"""Activities of journeys: each step's I/O, the hand-over to another journey, and stops.

Every step activity first checks that the enrollment is still active and records where it
is, in one transaction: a journey stopped in the database sends nothing more, even before
its runs receive their stop signal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from nudge.activities.failures import permanent, template_failure
from nudge.errors import Conflict
from nudge.integrations.attributes import apply_set_attributes
from nudge.integrations.calls import IntegrationError, call_integration
from nudge.messaging.channels.base import Outbound
from nudge.messaging.contacts import contact_context, recipient_of
from nudge.messaging.delivery import Deliverer
from nudge.models.business_hours import BusinessHoursPut, status_at
from nudge.models.channels import LAST_USED
from nudge.models.db import read_only, transaction
from nudge.models.integrations import Integration, SetAttribute
from nudge.models.journeys import (
    AskStep,
    AssignStep,
    BranchStep,
    CheckHoursStep,
    HttpRequestStep,
    JourneyDefinition,
    JumpToStep,
    SendMessageStep,
    Step,
    SurveyStep,
    TriggerJourneyStep,
    UpdateContactStep,
    WaitStep,
    condition_template,
    is_true,
    survey_score,
)
from nudge.models.messages import AnyMessage, TextMessage, render_message
from nudge.models.payloads import (
    AnswerInput,
    EndEnrollmentInput,
    EnrollmentRef,
    HandOver,
    HoursCheckInput,
    JourneyPlan,
    JourneyStepPlan,
    StepInput,
    StepOutcome,
    StopAllInput,
    SurveyAnswerInput,
    SurveyInput,
)
from nudge.models.signals import STOP_ENROLLMENT
from nudge.models.tables import Channel, Contact, Enrollment, Journey, Tenant, utcnow
from nudge.models.template_context import message_context
from nudge.naming import journey_workflow_id
from nudge.runs.signals import signal_runs
from nudge.security import SecretBox
from nudge.store.business_hours import find_business_hours, schedule_of
from nudge.store.directory import find_channel, secret_values
from nudge.store.journeys import (
    ACTIVE,
    contacts_ejected_since,
    create_enrollment,
    eject_active_enrollments,
    handed_over_to,
    journey_definition_at,
    mark_ended,
)
from nudge.store.surveys import record_survey_reply, record_survey_sent
from nudge.templating import render

# The channel an `assign` step without an integration tells.
INBOX_CHANNEL = "inbox"


@dataclass
class _Enrolled:
    """An active enrollment at one of its steps, with what its templates see."""

    enrollment: Enrollment
    contact: Contact
    tenant: Tenant
    definition: JourneyDefinition
    step: Step

    def templates(self) -> dict[str, Any]:
        return message_context(
            contact_context(self.contact),
            variables=dict(self.enrollment.variables),
            answer=self.enrollment.answer,
        )

    def source(self, **extra: Any) -> dict[str, Any]:
        """What a send says it came from (API.md: the webhook body's `source`)."""
        return {
            "type": "journey",
            "journey_id": self.enrollment.journey_id,
            "step": self.step.id,
            **extra,
        }


def _rendered(source: str, context: dict[str, Any], where: str) -> str:
    # Any error of a template (a syntax error, {{ 1 / 0 }}) renders the same way on a retry.
    try:
        return render(source, context)
    except Exception as exc:
        raise template_failure(exc, where) from None


def _ended(enrollment: Enrollment) -> StepOutcome:
    return StepOutcome(
        active=False,
        state=enrollment.state,
        ended_by=enrollment.ended_by,
        end_reason=enrollment.end_reason,
    )


def journey_plan(journey_id: str, version: int, definition: JourneyDefinition) -> JourneyPlan:
    """What the workflow needs to move from step to step (no templates, no messages)."""

    def plan(step: Step) -> JourneyStepPlan:
        planned = JourneyStepPlan(id=step.id, type=step.type, next=definition.following(step.id))
        if isinstance(step, WaitStep):
            planned.minutes = step.minutes
        elif isinstance(step, AskStep | SurveyStep):
            planned.timeout_minutes = step.timeout_minutes
            planned.on_timeout = step.on_timeout or planned.next
        if isinstance(step, SendMessageStep | AskStep | SurveyStep):
            window = step.send_window
            planned.send_window = window.model_dump(exclude_none=True) if window else None
        elif isinstance(step, TriggerJourneyStep):
            planned.journey_id, planned.start_at = step.journey_id, step.start_at
        elif isinstance(step, JumpToStep):
            planned.target = step.target
        return planned

    return JourneyPlan(
        journey_id=journey_id,
        name=definition.name,
        version=version,
        exit_conditions=list(definition.settings.exit_conditions),
        max_jumps=definition.settings.max_jumps,
        steps=[plan(step) for step in definition.steps],
    )


class JourneyActivities:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        box: SecretBox,
        http: httpx.AsyncClient,
        deliverer: Deliverer,
    ) -> None:
        self._sessions = sessions
        self._box = box
        self._http = http
        self._deliverer = deliverer

    # Loading and entering steps ------------------------------------------------------------

    @activity.defn(name="load_journey_plan")
    async def load_journey_plan(self, request: EnrollmentRef) -> JourneyPlan:
        """The steps of the version this enrollment is pinned to."""
        async with read_only(self._sessions)() as session:
            enrollment = await _enrollment(session, request.enrollment_id)
            definition = await journey_definition_at(
                session, enrollment.journey_id, enrollment.version
            )
        return journey_plan(enrollment.journey_id, enrollment.version, definition)

    async def _enter(self, request: StepInput) -> _Enrolled | StepOutcome:
        """The enrollment at ``request``'s step, recorded as its current step and wait;
        the outcome to give back instead when it is no longer active."""
        async with transaction(self._sessions) as session:
            enrollment = await _enrollment(session, request.enrollment_id)
            if enrollment.state != ACTIVE:
                return _ended(enrollment)
            enrollment.current_step = request.step_id
            enrollment.waiting_until = request.waiting_until
            definition = await journey_definition_at(
                session, enrollment.journey_id, enrollment.version
            )
            contact = await session.get_one(Contact, enrollment.contact_id)
            tenant = await session.get_one(Tenant, enrollment.tenant_id)
        return _Enrolled(enrollment, contact, tenant, definition, definition.step(request.step_id))

    @activity.defn(name="record_journey_progress")
    async def record_progress(self, request: StepInput) -> StepOutcome:
        """Record the step (and until when it waits) of a step that does no I/O of its own."""
        entered = await self._enter(request)
        return entered if isinstance(entered, StepOutcome) else StepOutcome()

    # Messages --------------------------------------------------------------------------------

    @activity.defn(name="send_journey_message")
    async def send_message(self, request: StepInput) -> StepOutcome:
        """Render a `send_message` or `ask` step's message and send it, effectively once."""
        entered = await self._enter(request)
        if isinstance(entered, StepOutcome):
            return entered
        step = entered.step
        assert isinstance(step, SendMessageStep | AskStep)
        channel = await self._channel(entered, step.channel)
        try:
            message = render_message(step.message, entered.templates())
        except Exception as exc:
            raise template_failure(exc, f"step {step.id!r} message") from None
        await self._deliver(entered, request, channel, message, entered.source())
        return StepOutcome()

    async def _channel(self, entered: _Enrolled, wanted: str) -> Channel:
        slug = entered.contact.last_channel if wanted == LAST_USED else wanted
        if slug is None:
            raise permanent(
                "ChannelNotFound",
                f"contact {entered.contact.external_id!r} has not written on any channel yet,"
                " so `last_used` names none",
            )
        async with read_only(self._sessions)() as session:
            channel = await find_channel(session, entered.tenant.id, slug)
        if channel is None:
            raise permanent("ChannelNotFound", f"no channel {slug!r}")
        return channel

    async def _deliver(
        self,
        entered: _Enrolled,
        request: StepInput,
        channel: Channel,
        message: AnyMessage,
        source: dict[str, Any],
        part: str = "",
    ) -> None:
        # The visit makes a loop that comes back to a step send again; a retry does not.
        # ``part`` names a step's second message (a survey's re-ask), sent once as well.
        key = (
            f"{request.key_prefix}:{request.step_id}#{request.visit}{part}"
            f":{entered.contact.external_id}:{channel.slug}"
        )
        await self._deliverer.deliver(
            tenant_id=entered.tenant.id,
            contact=entered.contact,
            channel=channel,
            outbound=Outbound(
                tenant=entered.tenant.slug,
                channel=channel.slug,
                idempotency_key=key,
                recipient=recipient_of(entered.contact),
                message=message,
                source=source,
                belongs_to=f"enrollment:{entered.enrollment.id}",
            ),
        )

    @activity.defn(name="save_journey_answer")
    async def save_answer(self, request: AnswerInput) -> StepOutcome:
        """Keep an `ask` step's reply as its variable and as `answer`."""
        async with transaction(self._sessions) as session:
            enrollment = await _enrollment(session, request.enrollment_id)
            if enrollment.state != ACTIVE:
                return _ended(enrollment)
            definition = await journey_definition_at(
                session, enrollment.journey_id, enrollment.version
            )
            step = definition.step(request.step_id)
            assert isinstance(step, AskStep)
            enrollment.variables = {**enrollment.variables, step.variable: request.text}
            enrollment.answer = request.text
            enrollment.waiting_until = None
        return StepOutcome()

    # Surveys -----------------------------------------------------------------------------------

    @activity.defn(name="send_journey_survey")
    async def send_survey(self, request: SurveyInput) -> StepOutcome:
        """Send a `survey` step's question (or, ``again``, its `invalid_message`) effectively
        once, and keep the question as sent."""
        entered = await self._enter(request)
        if isinstance(entered, StepOutcome):
            return entered
        step = entered.step
        assert isinstance(step, SurveyStep)
        template = step.invalid_message if request.again else step.question
        assert template is not None  # the workflow asks again only when there is one
        channel = await self._channel(entered, step.channel)
        try:
            message = render_message(template, entered.templates())
        except Exception as exc:
            raise template_failure(exc, f"step {step.id!r} survey message") from None
        part = ".again" if request.again else ""
        await self._deliver(
            entered, request, channel, message, entered.source(survey=step.kind), part
        )
        # After the send: a question that never left is not counted as sent.
        async with transaction(self._sessions) as session:
            await record_survey_sent(session, entered.enrollment, step.id, request.visit, step.kind)
        return StepOutcome()

    @activity.defn(name="save_journey_survey_answer")
    async def save_survey_answer(self, request: SurveyAnswerInput) -> StepOutcome:
        """Keep a survey's reply: its score, or `invalid` when it is none; ``again`` in the
        outcome when the step asks once more instead (its `invalid_message`)."""
        async with transaction(self._sessions) as session:
            enrollment = await _enrollment(session, request.enrollment_id)
            if enrollment.state != ACTIVE:
                return _ended(enrollment)
            definition = await journey_definition_at(
                session, enrollment.journey_id, enrollment.version
            )
            step = definition.step(request.step_id)
            assert isinstance(step, SurveyStep)
            score = survey_score(step.kind, request.text)
            enrollment.answer = request.text
            enrollment.waiting_until = None
            if score is None and step.invalid_message is not None and not request.again:
                return StepOutcome(again=True)
            if score is not None and step.variable is not None:
                enrollment.variables = {**enrollment.variables, step.variable: score}
            await record_survey_reply(
                session,
                enrollment,
                step.id,
                request.visit,
                step.kind,
                score=score,
                reply=request.text,
            )
        return StepOutcome()

    # Decisions and changes --------------------------------------------------------------------

    @activity.defn(name="check_journey_hours")
    async def check_hours(self, request: HoursCheckInput) -> StepOutcome:
        """The step a `check_hours` step continues at: `open` or `closed`, at the run's time."""
        entered = await self._enter(request)
        if isinstance(entered, StepOutcome):
            return entered
        step = entered.step
        assert isinstance(step, CheckHoursStep)
        async with read_only(self._sessions)() as session:
            row = await find_business_hours(session, entered.tenant.id, step.business_hours)
        if row is None:
            note = f"no business hours {step.business_hours!r}, so counted as open"
            return StepOutcome(next=step.open, note=note)
        return _hours_outcome(step, schedule_of(row), request)

    @activity.defn(name="evaluate_journey_branch")
    async def evaluate_branch(self, request: StepInput) -> StepOutcome:
        """The step a `branch` continues at: the first branch whose condition holds."""
        entered = await self._enter(request)
        if isinstance(entered, StepOutcome):
            return entered
        step = entered.step
        assert isinstance(step, BranchStep)
        context = entered.templates()
        for j, branch in enumerate(step.branches):
            where = f"step {step.id!r} branch {j} condition"
            if is_true(_rendered(condition_template(branch.condition), context, where)):
                return StepOutcome(next=branch.next)
        return StepOutcome(next=step.else_ or entered.definition.following(step.id))

    @activity.defn(name="update_journey_contact")
    async def update_contact(self, request: StepInput) -> StepOutcome:
        """Set the contact's custom attributes from an `update_contact` step's templates."""
        entered = await self._enter(request)
        if isinstance(entered, StepOutcome):
            return entered
        step = entered.step
        assert isinstance(step, UpdateContactStep)
        items = [SetAttribute(scope="contact", name=n, value=v) for n, v in step.attributes.items()]
        try:
            changes = apply_set_attributes(items, entered.templates())
        except Exception as exc:
            raise template_failure(exc, f"step {step.id!r}") from None
        async with transaction(self._sessions) as session:
            contact = await session.get_one(Contact, entered.contact.id)
            contact.attributes = {**contact.attributes, **changes.contact}
            contact.updated_at = utcnow()
        return StepOutcome()

    @activity.defn(name="call_journey_integration")
    async def http_request(self, request: StepInput) -> StepOutcome:
        """Call an `http_request` step's integration and keep the response as its variable."""
        entered = await self._enter(request)
        if isinstance(entered, StepOutcome):
            return entered
        step = entered.step
        assert isinstance(step, HttpRequestStep)
        response = await self._call(entered, step.integration, entered.templates())
        async with transaction(self._sessions) as session:
            enrollment = await _enrollment(session, request.enrollment_id)
            enrollment.variables = {**enrollment.variables, step.variable: response}
        return StepOutcome()

    async def _call(self, entered: _Enrolled, integration: Integration, context: Any) -> Any:
        async with read_only(self._sessions)() as session:
            secrets = await secret_values(session, entered.tenant.id, self._box)
        try:
            return await call_integration(self._http, integration, context, secrets=secrets)
        except IntegrationError as exc:
            raise exc.activity_failure() from exc

    @activity.defn(name="assign_journey_contact")
    async def assign(self, request: StepInput) -> StepOutcome:
        """Ask the inbox to assign the contact: through the step's integration, or a message
        (effectively once) on the tenant's channel `inbox`."""
        entered = await self._enter(request)
        if isinstance(entered, StepOutcome):
            return entered
        step = entered.step
        assert isinstance(step, AssignStep)
        context = entered.templates()
        assignee = _rendered(step.assignee, context, f"step {step.id!r} assignee").strip()
        assignment = {"assignee": assignee, "kind": step.kind}
        if step.integration is not None:
            await self._call(entered, step.integration, {**context, "assignment": assignment})
            return StepOutcome()
        async with read_only(self._sessions)() as session:
            inbox = await find_channel(session, entered.tenant.id, INBOX_CHANNEL)
        if inbox is None:
            raise permanent(
                "ChannelNotFound",
                f"step {step.id!r} assigns through the channel {INBOX_CHANNEL!r}, which does not"
                f" exist; create it with PUT /v1/channels/{INBOX_CHANNEL}",
            )
        who = entered.contact.name or entered.contact.external_id
        notice = TextMessage(text=f"Assign {who} to the {step.kind} {assignee}")
        await self._deliver(entered, request, inbox, notice, entered.source(assignment=assignment))
        return StepOutcome()

    # Handing over, ending, stopping -------------------------------------------------------

    @activity.defn(name="hand_over_journey")
    async def hand_over(self, request: StepInput) -> HandOver:
        """Enroll the contact in a `trigger_journey` step's target and mark this enrollment
        `handed_over`, in one transaction; a retry finds the hand-over done."""
        async with transaction(self._sessions) as session:
            enrollment = await _enrollment(session, request.enrollment_id)
            definition = await journey_definition_at(
                session, enrollment.journey_id, enrollment.version
            )
            step = definition.step(request.step_id)
            assert isinstance(step, TriggerJourneyStep)
            refused = HandOver(started=False, journey_id=step.journey_id, start_at=step.start_at)
            if enrollment.state == "handed_over":
                return await _done_hand_over(session, enrollment, refused)
            if enrollment.state != ACTIVE:
                return refused.model_copy(update={"reason": f"it had ended ({enrollment.state})"})
            target = await session.get(Journey, step.journey_id)
            problem = await _target_problem(session, enrollment, step, target)
            if problem or target is None:
                return refused.model_copy(update={"reason": problem})
            contact = await session.get_one(Contact, enrollment.contact_id)
            try:
                child = await create_enrollment(
                    session, target, contact, enrollment.variables, parent_id=enrollment.id
                )
            except Conflict as exc:
                return refused.model_copy(update={"reason": str(exc)})
            at = f" at step {step.start_at!r}" if step.start_at else ""
            mark_ended(
                enrollment, "handed_over", f"step {step.id}", f"handed over to {target.name!r}{at}"
            )
            enrollment.current_step = step.id
            await session.flush()
            return refused.model_copy(
                update={"started": True, "enrollment_id": child.id, "journey_name": target.name}
            )

    @activity.defn(name="end_journey_enrollment")
    async def end_enrollment(self, request: EndEnrollmentInput) -> StepOutcome:
        """Record how the enrollment ended (unless it already had); return what is recorded."""
        async with transaction(self._sessions) as session:
            enrollment = await _enrollment(session, request.enrollment_id)
            mark_ended(enrollment, request.state, request.stop.by, request.stop.reason)
            return _ended(enrollment)

    @activity.defn(name="eject_journey_enrollments")
    async def eject_enrollments(self, request: StopAllInput) -> int:
        """Mark every active enrollment of a stopped journey stopped and ejected, then
        signal `stop` to the run of each contact ejected by this stop; returns how many."""
        async with transaction(self._sessions) as session:
            # Enrollments that began while the journey was being stopped (a hand-over).
            at = max(utcnow(), request.since)
            stop = request.stop
            await eject_active_enrollments(session, request.journey_id, stop.by, stop.reason, at)
            contacts = await contacts_ejected_since(session, request.journey_id, request.since)
        ids = [journey_workflow_id(request.tenant, request.journey_id, c) for c in contacts]
        await signal_runs(activity.client(), ids, STOP_ENROLLMENT, request.stop)
        return len(ids)


def _hours_outcome(
    step: CheckHoursStep, schedule: BusinessHoursPut, request: HoursCheckInput
) -> StepOutcome:
    """Open or closed at the run's time, said for people (times in the schedule's zone)."""
    status = status_at(schedule, request.at)
    name = f"business hours {step.business_hours!r}"
    if status.open:
        close = status.next_close
        until = f" until {close:%A %H:%M} {schedule.timezone}" if close else ""
        return StepOutcome(next=step.open, note=f"{name} are open{until}")
    why = f" ({status.reason})" if status.reason else ""
    opens = f", opening {status.next_open:%A %H:%M} {schedule.timezone}" if status.next_open else ""
    return StepOutcome(next=step.closed, note=f"{name} are closed{why}{opens}")


async def _enrollment(session: AsyncSession, enrollment_id: str) -> Enrollment:
    enrollment = await session.get(Enrollment, enrollment_id)
    if enrollment is None:  # its journey was deleted
        raise permanent("EnrollmentNotFound", f"enrollment {enrollment_id!r} no longer exists")
    return enrollment


async def _target_problem(
    session: AsyncSession,
    enrollment: Enrollment,
    step: TriggerJourneyStep,
    target: Journey | None,
) -> str:
    """Why the contact cannot be handed over to ``target`` ('' when they can)."""
    if target is None or target.tenant_id != enrollment.tenant_id:
        return f"journey {step.journey_id!r} no longer exists"
    if target.id == enrollment.journey_id:
        return "a journey cannot trigger itself"
    if step.start_at is not None:
        definition = await journey_definition_at(session, target.id, target.version)
        if all(s.id != step.start_at for s in definition.steps):
            return f"journey {target.name!r} has no step {step.start_at!r}"
    return ""


async def _done_hand_over(
    session: AsyncSession, enrollment: Enrollment, answer: HandOver
) -> HandOver:
    child, name = await handed_over_to(session, enrollment.id)
    return answer.model_copy(
        update={"started": True, "enrollment_id": child.id, "journey_name": name}
    )
