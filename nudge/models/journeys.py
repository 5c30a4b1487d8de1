"""Journey definitions (customer workflows): a trigger, settings and ordered steps with ids.

Everything a definition holds by itself is checked when it is saved: limits, Jinja2 templates
and conditions (compiled), and the graph of steps (ids unique, every target exists, every step
reachable from the first). What needs the database (other journeys, channels, secrets) is
checked by ``nudge.store.journey_references``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nudge.models.channels import CHANNEL_SLUG, LAST_USED
from nudge.models.deliveries import DeliveryState
from nudge.models.integrations import INTEGRATION_NAME, Integration
from nudge.models.messages import MessageTemplate
from nudge.models.send_windows import SendWindow
from nudge.models.template_context import JOURNEY_NAMES, unknown_names
from nudge.models.validation import Loc, located_errors
from nudge.templating import check_template

STEP_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
MINUTES_IN_A_YEAR = 525_600
ExitCondition = Literal["incoming_message", "outgoing_message", "manual_assignment"]
JourneyStatus = Literal["draft", "published", "stopped"]
EnrollmentState = Literal["active", "completed", "exited", "stopped", "handed_over"]
SurveyKind = Literal["csat", "nps"]
# The scores each survey takes, lowest and highest.
SURVEY_SCALES: dict[str, tuple[int, int]] = {"csat": (1, 5), "nps": (0, 10)}
_SCORE = re.compile(r"\s*([0-9]{1,2})\s*")

Minutes = Annotated[int, Field(ge=1, le=MINUTES_IN_A_YEAR, description="1..525600 (a year).")]
StepId = Annotated[str, Field(pattern=STEP_ID)]
VariableName = Annotated[str, Field(pattern=INTEGRATION_NAME)]
ChannelRef = Annotated[
    str,
    Field(
        pattern=f"{CHANNEL_SLUG}|^{LAST_USED}$",
        description="A channel id, or `last_used` for the channel the contact last wrote from.",
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def condition_template(condition: str) -> str:
    """A branch condition as a template: ``answer == '1'`` is read as ``{{ answer == '1' }}``."""
    return condition if "{{" in condition or "{%" in condition else f"{{{{ {condition} }}}}"


def is_true(rendered: str) -> bool:
    """How a rendered condition counts: empty, ``false``, ``none`` and ``0`` are false."""
    return rendered.strip().lower() not in ("", "false", "none", "0")


def survey_score(kind: str, reply: str) -> int | None:
    """The score a reply gives: a whole number of the survey's scale, alone (spaces around
    it are fine); None for anything else ("5 stars" is not read as 5: it may say more)."""
    found = _SCORE.fullmatch(reply)
    if found is None:
        return None
    score, (lowest, highest) = int(found.group(1)), SURVEY_SCALES[kind]
    return score if lowest <= score <= highest else None


# Trigger and settings -------------------------------------------------------------------------


class Trigger(_Strict):
    """How contacts enter: enrolled through the API, by a message, or by another journey."""

    type: Literal["api", "incoming_message", "manual"] = Field(
        description="`manual`: only reachable through another journey's `trigger_journey` step."
    )
    keywords: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list,
        max_length=100,
        description="For `incoming_message`: whole words, any case; none = any message.",
    )

    @model_validator(mode="after")
    def _keywords_only_for_messages(self) -> Trigger:
        if self.keywords and self.type != "incoming_message":
            raise located_errors(
                type(self).__name__,
                [
                    (
                        ("keywords",),
                        "keywords_not_allowed",
                        "only an `incoming_message` trigger has keywords",
                        self.keywords,
                    )
                ],
            )
        return self

    def matches(self, text: str) -> bool:
        """True when a message with ``text`` starts this journey."""
        if self.type != "incoming_message":
            return False
        return not self.keywords or any(
            re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, re.IGNORECASE)
            for word in self.keywords
        )


class JourneySettings(_Strict):
    allow_agents_stop: bool = Field(
        default=False, description="Agents may stop it for one contact from the inbox."
    )
    exit_conditions: list[ExitCondition] = Field(
        default_factory=list,
        max_length=3,
        description="The first of these that happens ends the journey for that contact.",
    )
    max_jumps: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=100,
        description="How often one enrollment may jump (a `jump_to`, or any move back to an "
        "earlier or the same step), 1..1000; past it, it ends.",
    )

    @field_validator("exit_conditions")
    @classmethod
    def _unique(cls, conditions: list[ExitCondition]) -> list[ExitCondition]:
        return list(dict.fromkeys(conditions))


# Steps ----------------------------------------------------------------------------------------


class _Step(_Strict):
    id: StepId
    next: StepId | None = Field(
        default=None, description="The step that follows; default the next one in order."
    )


class _MessageStep(_Step):
    send_window: SendWindow | None = Field(
        default=None, description="Outside this window the message waits until it opens."
    )

    @model_validator(mode="after")
    def _known_names(self) -> _MessageStep:
        message = getattr(self, "message", None)
        problems = unknown_names(message, JOURNEY_NAMES) if message is not None else []
        if problems:
            raise located_errors(type(self).__name__, problems)
        return self


class SendMessageStep(_MessageStep):
    type: Literal["send_message"]
    channel: ChannelRef
    message: MessageTemplate = Field(description="Templates see `contact`, `variables`, `answer`.")


class WaitStep(_Step):
    type: Literal["wait"]
    minutes: Minutes


class AskStep(_MessageStep):
    """Send a question, wait for the contact's reply, save it in `variables` and `answer`."""

    type: Literal["ask"]
    channel: ChannelRef
    message: MessageTemplate
    variable: VariableName
    timeout_minutes: Minutes
    on_timeout: StepId | None = Field(
        default=None, description="Where it goes when no reply came in time; default `next`."
    )


class Branch(_Strict):
    condition: Annotated[str, Field(min_length=1, max_length=2000)] = Field(
        description="Jinja2, e.g. `{{ answer | trim == '1' }}`; empty, false, none and 0 are false."
    )
    next: StepId

    @field_validator("condition")
    @classmethod
    def _compiles(cls, condition: str) -> str:
        check_template(condition_template(condition))
        return condition


class BranchStep(_Step):
    """The first branch whose condition holds decides; none holds: `else` (or `next`)."""

    model_config = ConfigDict(extra="forbid", validate_by_name=True, serialize_by_alias=True)

    type: Literal["branch"]
    branches: Annotated[list[Branch], Field(min_length=1, max_length=50)]
    else_: StepId | None = Field(default=None, alias="else")

    @model_validator(mode="after")
    def _else_or_next(self) -> BranchStep:
        if self.else_ is not None and self.next is not None:
            raise located_errors(
                type(self).__name__,
                [(("next",), "else_and_next", "give `else` or `next`, not both", self.next)],
            )
        return self


class AssignStep(_Step):
    """Tell the inbox to assign the contact: through `integration`, or the channel `inbox`."""

    type: Literal["assign"]
    assignee: Annotated[str, Field(min_length=1, max_length=200, description="A template.")]
    kind: Literal["agent", "queue"] = "agent"
    integration: Integration | None = None

    @field_validator("assignee")
    @classmethod
    def _compiles(cls, assignee: str) -> str:
        return check_template(assignee)


class UpdateContactStep(_Step):
    type: Literal["update_contact"]
    attributes: Annotated[
        dict[Annotated[str, Field(pattern=INTEGRATION_NAME)], str],
        Field(min_length=1, description="Custom attribute name → template of its value."),
    ]

    @field_validator("attributes")
    @classmethod
    def _compile(cls, attributes: dict[str, str]) -> dict[str, str]:
        problems: list[tuple[Loc, str, str, Any]] = []
        for name, source in attributes.items():
            try:
                check_template(source)
            except ValueError as exc:
                problems.append(((name,), "template", str(exc), source))
        if problems:
            raise located_errors(cls.__name__, problems)
        return attributes


class HttpRequestStep(_Step):
    """Call an integration and save its response in `variables`."""

    type: Literal["http_request"]
    integration: Integration
    variable: VariableName


class CheckHoursStep(_Step):
    """Go on at `open` while a business-hours schedule is open at the run's own time, else
    at `closed`. A schedule that does not exist counts as open (the run's details say so):
    a misspelt or deleted schedule never strands contacts on the closed path."""

    type: Literal["check_hours"]
    business_hours: Annotated[str, Field(pattern=CHANNEL_SLUG)] = Field(
        description="The schedule's id (`PUT /v1/business-hours/{id}`), e.g. `default`."
    )
    open: StepId
    closed: StepId


class SurveyStep(_MessageStep):
    """Ask a CSAT (1-5) or NPS (0-10) question, wait for the reply and store the score per
    contact (counted by `GET /v1/metrics/surveys`); the score is also `answer`, and goes in
    `variables` under `variable` when one is given.

    A reply that is not a whole number of the scale is not a score: with `invalid_message`
    that message goes once and the survey waits again (a fresh `timeout_minutes`); without
    it, or when the next reply is no score either, the reply is stored as `invalid` (sent,
    not answered) and the journey goes on at `next` all the same. No reply in time:
    `on_timeout` (default `next`), and the question counts as sent, not answered."""

    type: Literal["survey"]
    kind: SurveyKind = Field(
        description="`csat`: 1-5, satisfied at 4-5; `nps`: 0-10, promoters 9-10, detractors 0-6."
    )
    channel: ChannelRef
    question: MessageTemplate = Field(description="Templates see `contact`, `variables`, `answer`.")
    timeout_minutes: Minutes
    on_timeout: StepId | None = Field(
        default=None, description="Where it goes when no reply came in time; default `next`."
    )
    invalid_message: MessageTemplate | None = Field(
        default=None, description="Sent once when a reply is not a score of the scale."
    )
    variable: VariableName | None = Field(
        default=None, description="Keep the score in `variables` under this name too."
    )

    @model_validator(mode="after")
    def _known_message_names(self) -> SurveyStep:
        problems = unknown_names(self.question, JOURNEY_NAMES, ("question",))
        if self.invalid_message is not None:
            problems += unknown_names(self.invalid_message, JOURNEY_NAMES, ("invalid_message",))
        if problems:
            raise located_errors(type(self).__name__, problems)
        return self


class TriggerJourneyStep(_Step):
    """Hand the contact over to another journey, from its beginning or from a named step."""

    type: Literal["trigger_journey"]
    journey_id: Annotated[str, Field(min_length=1, max_length=64)]
    start_at: StepId | None = None


class JumpToStep(_Step):
    type: Literal["jump_to"]
    target: StepId


class EndStep(_Step):
    type: Literal["end"]


Step = Annotated[
    SendMessageStep
    | WaitStep
    | AskStep
    | BranchStep
    | AssignStep
    | UpdateContactStep
    | HttpRequestStep
    | TriggerJourneyStep
    | JumpToStep
    | EndStep
    | CheckHoursStep
    | SurveyStep,
    Field(discriminator="type"),
]
# These do not fall through to the following step (`check_hours` always names both ways).
FINAL_TYPES = frozenset({"end", "trigger_journey", "jump_to", "check_hours"})


# The definition -------------------------------------------------------------------------------


JOURNEY_EXAMPLE: dict[str, Any] = {
    "name": "Main menu",
    "trigger": {"type": "incoming_message", "keywords": ["menu", "hi"]},
    "settings": {
        "allow_agents_stop": True,
        "exit_conditions": ["outgoing_message", "manual_assignment"],
        "max_jumps": 50,
    },
    "steps": [
        {
            "id": "welcome",
            "type": "send_message",
            "channel": "last_used",
            "message": {"kind": "text", "text": "Hi {{ contact.name }}! 1 Product 2 Service"},
        },
        {
            "id": "ask-option",
            "type": "ask",
            "channel": "last_used",
            "message": {"kind": "text", "text": "Pick one"},
            "variable": "option",
            "timeout_minutes": 60,
            "on_timeout": "goodbye",
        },
        {
            "id": "route",
            "type": "branch",
            "branches": [{"condition": "{{ answer | trim == '1' }}", "next": "goodbye"}],
            "else": "welcome",
        },
        {"id": "goodbye", "type": "end"},
    ],
}


class JourneyDefinition(_Strict):
    """A journey as an admin writes it (the body of POST and PUT)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [JOURNEY_EXAMPLE]})

    name: Annotated[str, Field(min_length=1, max_length=200)]
    trigger: Trigger
    settings: JourneySettings = Field(default_factory=JourneySettings)
    steps: Annotated[list[Step], Field(min_length=1, max_length=200)]

    @model_validator(mode="after")
    def _graph(self) -> JourneyDefinition:
        problems = _duplicate_ids(self.steps)
        if not problems:
            problems = _unknown_targets(self) or _unreachable(self)
        if problems:
            raise located_errors(type(self).__name__, problems)
        return self

    def step(self, step_id: str) -> Step:
        return next(s for s in self.steps if s.id == step_id)

    def following(self, step_id: str) -> str | None:
        """Where the step continues: its `next`, else the next one in order (None: the end)."""
        index = self.index(step_id)
        step = self.steps[index]
        if step.type in FINAL_TYPES:
            return None
        if step.next is not None:
            return step.next
        return self.steps[index + 1].id if index + 1 < len(self.steps) else None

    def index(self, step_id: str) -> int:
        return next(i for i, s in enumerate(self.steps) if s.id == step_id)

    def targets(self, step_id: str) -> list[str]:
        """Every step the step can lead to."""
        step = self.step(step_id)
        found = [self.following(step_id)]
        if isinstance(step, AskStep | SurveyStep):
            found.append(step.on_timeout)
        elif isinstance(step, BranchStep):
            found += [b.next for b in step.branches] + [step.else_]
        elif isinstance(step, JumpToStep):
            found.append(step.target)
        elif isinstance(step, CheckHoursStep):
            found += [step.open, step.closed]
        return [target for target in found if target is not None]


def _duplicate_ids(steps: list[Step]) -> list[tuple[Loc, str, str, Any]]:
    seen: set[str] = set()
    problems: list[tuple[Loc, str, str, Any]] = []
    for i, step in enumerate(steps):
        if step.id in seen:
            message = f"another step already has the id {step.id!r}"
            problems.append((("steps", i, "id"), "duplicate_step_id", message, step.id))
        seen.add(step.id)
    return problems


def _references(step: Step) -> Iterator[tuple[Loc, str]]:
    """Each step id the step names, with the path of the field that names it."""
    if step.next is not None:
        yield ("next",), step.next
    if isinstance(step, AskStep | SurveyStep) and step.on_timeout is not None:
        yield ("on_timeout",), step.on_timeout
    if isinstance(step, BranchStep):
        for j, branch in enumerate(step.branches):
            yield ("branches", j, "next"), branch.next
        if step.else_ is not None:
            yield ("else",), step.else_
    if isinstance(step, JumpToStep):
        yield ("target",), step.target
    if isinstance(step, CheckHoursStep):
        yield ("open",), step.open
        yield ("closed",), step.closed


def _unknown_targets(defn: JourneyDefinition) -> list[tuple[Loc, str, str, Any]]:
    ids = {step.id for step in defn.steps}
    problems: list[tuple[Loc, str, str, Any]] = []
    for i, step in enumerate(defn.steps):
        if step.type in FINAL_TYPES and step.next is not None:
            message = f"a {step.type} step does not continue to another step; remove `next`"
            problems.append((("steps", i, "next"), "next_not_allowed", message, step.next))
            continue
        for loc, target in _references(step):
            if target not in ids:
                message = f"no step with id {target!r}"
                problems.append((("steps", i, *loc), "unknown_step", message, target))
    return problems


def _unreachable(defn: JourneyDefinition) -> list[tuple[Loc, str, str, Any]]:
    first = defn.steps[0].id
    reached, todo = {first}, [first]
    while todo:
        for target in defn.targets(todo.pop()):
            if target not in reached:
                reached.add(target)
                todo.append(target)
    return [
        (
            ("steps", i, "id"),
            "unreachable_step",
            f"step {step.id!r} cannot be reached from the first step {first!r}",
            step.id,
        )
        for i, step in enumerate(defn.steps)
        if step.id not in reached
    ]


# Public shapes ---------------------------------------------------------------------------------


class JourneyPublic(JourneyDefinition):
    """A stored journey."""

    id: str
    status: JourneyStatus = Field(description="draft → published → stopped.")
    version: int = Field(description="Goes up by one on every change.")
    created_at: datetime
    updated_at: datetime


class EnrollmentCreate(_Strict):
    """Enroll a contact (a journey with an `api` trigger)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"contact_id": "ada", "variables": {"order": "A-1"}}]},
    )

    contact_id: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="The contact's external id."
    )
    variables: dict[Annotated[str, Field(max_length=100)], Any] = Field(
        default_factory=dict,
        max_length=100,
        description="Starting `variables` that templates see (at most 100).",
    )


class EnrollmentPublic(BaseModel):
    """One contact's way through one journey."""

    id: str
    journey_id: str
    journey_name: str
    contact_id: str = Field(description="The contact's external id.")
    state: EnrollmentState
    current_step: str | None
    waiting_until: datetime | None = Field(description="While a `wait` or an `ask` waits.")
    started_at: datetime
    ended_at: datetime | None
    ended_by: str | None
    end_reason: str | None
    deliveries: list[DeliveryState] = Field(
        default=[],
        description="In lists: the messages the journey sent the contact (newest 20), each"
        " with what its provider said of it (delivered, read, failed, replied).",
    )


class JourneyVersionPublic(JourneyDefinition):
    """One saved version of a journey, as it was written."""

    version: int
    created_at: datetime


class JourneyStop(BaseModel):
    """Stop a whole journey: every enrolled contact is ejected."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(min_length=1, max_length=500)] = "journey stopped"


class EnrollmentStop(BaseModel):
    """An agent stops one contact's journey from the inbox."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"agent": "grace", "reason": "taking over the chat"}]},
    )

    agent: Annotated[str, Field(min_length=1, max_length=150)] = Field(
        description="Who stops it, as the inbox names the agent."
    )
    reason: Annotated[str, Field(min_length=1, max_length=500)] = "stopped from the inbox"
