"""Workflow histories: stored ones for replay tests, and what a run's history shows.

Run the suite with NUDGE_RECORD_HISTORIES=1 to (re)write the stored ones after a
deliberate, compatible change; commit the files. Without it, nothing is written.

The history is what a run did for good: once it has closed, nothing more can be scheduled,
so "nothing more was sent" is a statement about its activities, not about a quiet moment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle

HISTORIES = Path(__file__).parent.parent / "histories"

_OUTCOMES = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: ("activity_task_completed", "completed"),
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: ("activity_task_failed", "failed"),
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: ("activity_task_timed_out", "timed_out"),
    EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED: ("activity_task_canceled", "canceled"),
}


async def keep_history(handle: WorkflowHandle[Any, Any], name: str) -> None:
    if os.environ.get("NUDGE_RECORD_HISTORIES") != "1":
        return
    history = await handle.fetch_history()
    (HISTORIES / f"{name}.json").write_text(history.to_json())


@dataclass(frozen=True)
class ActivityRun:
    """One activity a run scheduled, and how it ended in the run's history."""

    name: str
    outcome: str  # completed, failed, timed_out, canceled; "open" while it has not ended
    cancel_requested: bool = False


async def activity_runs(handle: WorkflowHandle[Any, Any]) -> list[ActivityRun]:
    """Every activity the (newest) run of ``handle`` scheduled, in order."""
    history = await handle.fetch_history()
    names: dict[int, str] = {}
    outcomes: dict[int, str] = {}
    cancelled: set[int] = set()
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attributes = event.activity_task_scheduled_event_attributes
            names[event.event_id] = attributes.activity_type.name
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED:
            cancelled.add(event.activity_task_cancel_requested_event_attributes.scheduled_event_id)
        elif event.event_type in _OUTCOMES:
            field, outcome = _OUTCOMES[event.event_type]
            outcomes[getattr(event, f"{field}_event_attributes").scheduled_event_id] = outcome
    return [
        ActivityRun(name, outcomes.get(event_id, "open"), event_id in cancelled)
        for event_id, name in names.items()
    ]


async def scheduled(handle: WorkflowHandle[Any, Any], name: str) -> list[str]:
    """How each scheduled activity called ``name`` ended ("open" while it has not)."""
    return [run.outcome for run in await activity_runs(handle) if run.name == name]


async def signals_received(handle: WorkflowHandle[Any, Any]) -> int:
    """How many signals reached the run (a signal call returns once it is in the history)."""
    history = await handle.fetch_history()
    signalled = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    return sum(1 for event in history.events if event.event_type == signalled)


async def signals_handled(handle: WorkflowHandle[Any, Any]) -> int:
    """How many signals the workflow code has seen: those a workflow task completed after."""
    history = await handle.fetch_history()
    received = handled = 0
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            received += 1
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            handled = received
    return handled


async def waiting_on_a_timer(handle: WorkflowHandle[Any, Any]) -> bool:
    """True when the run has nothing in flight but a timer: every activity it scheduled
    has ended and a timer it started has neither fired nor been cancelled."""
    history = await handle.fetch_history()
    timers: set[str] = set()
    activities: set[int] = set()
    for event in history.events:
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_TIMER_STARTED:
            timers.add(event.timer_started_event_attributes.timer_id)
        elif kind == EventType.EVENT_TYPE_TIMER_FIRED:
            timers.discard(event.timer_fired_event_attributes.timer_id)
        elif kind == EventType.EVENT_TYPE_TIMER_CANCELED:
            timers.discard(event.timer_canceled_event_attributes.timer_id)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            activities.add(event.event_id)
        elif kind in _OUTCOMES:
            field, _ = _OUTCOMES[kind]
            activities.discard(getattr(event, f"{field}_event_attributes").scheduled_event_id)
    return bool(timers) and not activities
