"""Inputs and results of workflows, activities and signals.

One model each, so fields can be added without breaking running workflows. They carry
ids, never secrets or large data: history is kept forever and shown to operators.
This module is imported by workflow code and must stay free of I/O.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel


class SendNotificationInput(BaseModel):
    tenant_id: str
    tenant: str
    notification_id: str
    contact: str
    channel: str


class DeliverNotificationInput(BaseModel):
    tenant_id: str
    notification_id: str
    idempotency_key: str


class DeliveryResult(BaseModel):
    delivery_id: str
    channel: str
    already_sent: bool = False
    # `unknown`: an earlier try may have reached a provider that keeps copies; not resent.
    status: str = "sent"


class NotificationFailureInput(BaseModel):
    tenant_id: str
    notification_id: str
    reason: str


# Follow-ups ---------------------------------------------------------------------------


class PollerInput(BaseModel):
    tenant_id: str
    tenant: str
    followup_id: str
    time_scale: float = 1.0
    # The poller continues as new after this many polls (or sooner, when Temporal suggests),
    # so its history stays small however long the follow-up runs.
    polls_per_run: int = 500


class PollInput(BaseModel):
    tenant_id: str
    tenant: str
    followup_id: str
    time_scale: float = 1.0


class PollResult(BaseModel):
    name: str
    polling_minutes: int
    found: int = 0
    new: int = 0
    resolved: int = 0
    skipped: int = 0


class Ending(BaseModel):
    """Who ended a run and why: shown in the API and in the run's details."""

    by: str
    reason: str
    # The record generation it is meant for (follow-up record signals): a record that came
    # back is followed by a new generation, which ignores what was meant for the old one.
    generation: int | None = None


class StopRecordsInput(BaseModel):
    tenant_id: str
    tenant: str
    followup_id: str
    stop: Ending


class RecordInput(BaseModel):
    tenant_id: str
    tenant: str
    followup_id: str
    record_id: str
    reconciliation_id: str
    version: int
    generation: int = 1
    time_scale: float = 1.0


class RecordPlan(BaseModel):
    name: str
    attempts: int
    notify_minutes: int
    on_reply: bool
    send_window: dict[str, Any] | None = None


class AttemptInput(BaseModel):
    tenant_id: str
    record_id: str
    attempt: int
    attempts: int
    key_prefix: str
    next_attempt_at: datetime | None = None
    # The run's generation: a run of an earlier one sends nothing for the record's newer one.
    generation: int | None = None


class AttemptResult(BaseModel):
    sent: int
    unmatched: list[str] = []
    stopped: bool = False
    # Sends whose earlier try's outcome is unknown, on channels that cannot drop a copy:
    # recorded `unknown` and not sent again.
    unknown: int = 0
    # With ``stopped``: how the database says the record ended (its signal may never come),
    # or that the record is followed by a newer generation than this run's.
    state: str | None = None
    ended: Ending | None = None
    superseded: bool = False


class ButtonPress(BaseModel):
    action: str
    by: str
    # The generation the pressed button was sent in (its token's "g"); see ``Ending``.
    generation: int | None = None


class ActionsInput(BaseModel):
    tenant_id: str
    record_id: str
    stage: str  # "after_all_attempts" or "button:<action>"
    attempt: int
    generation: int | None = None


class EndRecordInput(BaseModel):
    tenant_id: str
    record_id: str
    state: str
    stop: Ending
    # Only a record row of this generation is ended (None: any, for older runs).
    generation: int | None = None


class RecordEnded(BaseModel):
    """What ``end_record`` found: a newer generation still to follow, when the record came
    back while this run was open (its start found this run, so this run goes on for it)."""

    generation: int | None = None
    version: int | None = None


class ResendInput(BaseModel):
    """An operator's resend of a delivery whose outcome is unknown."""

    tenant_id: str
    delivery_id: str


class ResendResult(BaseModel):
    delivery_id: str  # the resend's own delivery
    status: str


class FallbackWatchInput(BaseModel):
    """Watch a sent delivery; when it is not delivered in time, try the next channel."""

    tenant_id: str
    delivery_id: str  # the first try's delivery: its channel's fallback list is followed
    after_minutes: int
    time_scale: float = 1.0
    # The try to watch first, when not the first try (a fallback try that failed).
    watched_delivery_id: str | None = None


class FallbackStepInput(BaseModel):
    tenant_id: str
    first_delivery_id: str
    watched_delivery_id: str  # the try being waited on (the first, or a fallback try)


class FallbackStepResult(BaseModel):
    # The fallback try just made, to be watched in turn; None: nothing more to try.
    next_delivery_id: str | None
    outcome: str  # what became of the watched try, or why nothing more is tried
    # The try just made is on the last fallback channel: nothing to wait for after it.
    last: bool = False


# Journeys -----------------------------------------------------------------------------


class JourneyMessage(BaseModel):
    """Signal `message`: a message from the contact (`incoming`) or to them (`outgoing`)."""

    direction: Literal["incoming", "outgoing"]
    channel: str
    text: str = ""  # at most 10 000 characters (the events API's limit)
    message_id: str
    # The enrollment it was routed to: a later enrollment of the contact in the same journey
    # (same workflow id) ignores it. None in histories from before this field.
    enrollment_id: str | None = None


class JourneyAssignment(BaseModel):
    """Signal `assignment`: the contact was assigned; `manual` when a person did it."""

    assignee: str
    manual: bool = False
    # The event's id: a relayed repeat is dropped. None in histories from before this field.
    event_id: str | None = None
    enrollment_id: str | None = None


class JourneyPosition(BaseModel):
    """Where an enrollment is, carried across continue-as-new."""

    step: str | None
    visits: dict[str, int] = {}
    jumps: int = 0


class EnrollmentInput(BaseModel):
    tenant_id: str
    tenant: str
    journey_id: str
    enrollment_id: str
    external_id: str
    start_at: str | None = None
    time_scale: float = 1.0
    position: JourneyPosition | None = None
    # The event ids a run had handled, carried across continue-as-new to drop repeats.
    seen_events: list[str] = []


class JourneyStepPlan(BaseModel):
    """What the workflow needs of one step to move on; templates and messages stay in the DB."""

    id: str
    type: str
    next: str | None = None  # where it continues (the default already resolved)
    minutes: int | None = None  # wait
    timeout_minutes: int | None = None  # ask
    on_timeout: str | None = None  # ask (default already resolved)
    target: str | None = None  # jump_to
    journey_id: str | None = None  # trigger_journey
    start_at: str | None = None  # trigger_journey
    send_window: dict[str, Any] | None = None  # send_message, ask


class JourneyPlan(BaseModel):
    journey_id: str
    name: str
    version: int
    exit_conditions: list[str]
    max_jumps: int
    steps: list[JourneyStepPlan]


class EnrollmentRef(BaseModel):
    tenant_id: str
    enrollment_id: str


class StepInput(BaseModel):
    tenant_id: str
    enrollment_id: str
    step_id: str
    visit: int = 1
    # Idempotency keys of sends start with it: `{key_prefix}:{step}#{visit}:{contact}:{channel}`.
    key_prefix: str = ""
    waiting_until: datetime | None = None


class StepOutcome(BaseModel):
    """``active`` is False when the enrollment was ended elsewhere (a stop of the journey)."""

    active: bool = True
    next: str | None = None  # branch, check_hours: the step chosen
    state: str = "active"
    ended_by: str | None = None
    end_reason: str | None = None
    note: str | None = None  # check_hours: what was decided, for the run's details
    again: bool = False  # survey: the reply was no score; ask once more


class AnswerInput(BaseModel):
    tenant_id: str
    enrollment_id: str
    step_id: str
    text: str


class HoursCheckInput(StepInput):
    """A `check_hours` step, decided at the run's own time (``workflow.now()``), which is
    what a replay and the time-skipping test server agree on."""

    at: datetime


class SurveyInput(StepInput):
    again: bool = False  # send the survey's `invalid_message` instead of its question


class SurveyAnswerInput(AnswerInput):
    visit: int = 1
    again: bool = False  # the reply to the `invalid_message`: no third try


class HandOver(BaseModel):
    """A `trigger_journey` step's result: the target's new enrollment, or why there is none."""

    started: bool
    enrollment_id: str | None = None
    journey_id: str
    journey_name: str = ""
    start_at: str | None = None
    reason: str = ""


class EndEnrollmentInput(BaseModel):
    tenant_id: str
    enrollment_id: str
    state: str
    stop: Ending


class StopAllInput(BaseModel):
    tenant_id: str
    tenant: str
    journey_id: str
    stop: Ending
    since: datetime  # enrollments ejected from this moment on are signalled


# Campaigns ------------------------------------------------------------------------------


class CampaignInput(BaseModel):
    """A campaign's run: ids and counters only (its rows are in the database)."""

    tenant_id: str
    tenant: str
    campaign_id: str
    time_scale: float = 1.0
    # Carried across continue-as-new.
    started: bool = False
    after_line: int = 0
    sent: int = 0
    failed: int = 0
    unknown: int = 0
    batches: int = 0


class CampaignPlan(BaseModel):
    """What the run needs of the stored campaign (edits while scheduled change it)."""

    status: str
    start_at: str | None  # ISO, UTC
    mode: dict[str, Any]
    total: int


class CampaignBatchInput(BaseModel):
    tenant_id: str
    campaign_id: str
    after_line: int
    limit: int
    # `rate` mode: the sends are spread at this pace within the batch.
    per_second: float | None = None


class CampaignBatchResult(BaseModel):
    sent: int = 0
    failed: int = 0
    unknown: int = 0
    last_line: int
    # No queued row is left after `last_line`.
    done: bool
    # The stored status stopped the batch (paused or cancelled before a send).
    stopped_by: str | None = None
    # The provider asked to slow down (429, 5xx): wait this long before the next batch.
    back_off_seconds: float | None = None


class CampaignControl(BaseModel):
    by: str


# Business hours -------------------------------------------------------------------------


class OpeningWatchInput(BaseModel):
    """The run that waits for a schedule to open, then tells who asked to be told."""

    tenant_id: str
    tenant: str
    schedule_id: str
    schedule: str  # its slug, for the UI
    time_scale: float = 1.0


class OpeningPlan(BaseModel):
    opens_at: str | None  # ISO, UTC; None: it opens in no day of the horizon
    waiting: int  # subscriptions not notified yet


class NotifiedBatch(BaseModel):
    notified: int
    failed: int
    more: bool


class WindowInput(BaseModel):
    """When may a send go: now, or when its window opens? For a record or an enrollment
    (whose contact's time zone `recipient_local` windows follow)."""

    tenant_id: str
    window: dict[str, Any]
    at: str  # the run's time, ISO
    record_id: str | None = None
    enrollment_id: str | None = None


class WindowPlan(BaseModel):
    opens_at: str | None  # None: open now (or the window cannot be found: send)
    describe: str | None = None  # e.g. "opens Monday 09:00 Europe/Madrid"
