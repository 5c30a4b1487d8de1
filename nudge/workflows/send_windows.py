"""Holding a send until its window opens: a durable timer, cut short by an end."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow

from nudge.models.payloads import WindowInput
from nudge.workflows.policies import BOOKKEEPING_RETRY, BOOKKEEPING_TIMEOUT
from nudge.workflows.timers import wait_until

with workflow.unsafe.imports_passed_through():
    from nudge.activities.send_windows import SendWindowActivities

# Runs started before send windows existed replay as they ran.
SEND_WINDOW = "send-window"


async def hold_for_window(
    window: dict[str, Any] | None,
    *,
    tenant_id: str,
    ended: Callable[[], bool],
    say: Callable[[str], None],
    time_scale: float = 1.0,
    record_id: str | None = None,
    enrollment_id: str | None = None,
) -> None:
    """Return when the send may go: at once inside its window, else when it opens (or when
    the run is ended meanwhile: the caller checks). Planned from the run's own clock, again
    after each wake, so a schedule edited meanwhile is followed."""
    if window is None or not workflow.patched(SEND_WINDOW):
        return
    while not ended():
        plan = await workflow.execute_activity_method(
            SendWindowActivities.window_opens,
            WindowInput(
                tenant_id=tenant_id,
                window=window,
                at=workflow.now().isoformat(),
                record_id=record_id,
                enrollment_id=enrollment_id,
            ),
            start_to_close_timeout=BOOKKEEPING_TIMEOUT,
            retry_policy=BOOKKEEPING_RETRY,
            summary="is the send window open?",
        )
        if plan.opens_at is None:
            return
        say(f"waiting for business hours: {plan.describe}")
        # A second late, so that the run's clock is inside the window when it asks again.
        wait = datetime.fromisoformat(plan.opens_at) - workflow.now() + timedelta(seconds=1)
        await wait_until(ended, wait / time_scale, "until the send window opens")
        if time_scale != 1:
            return  # faster schedules (development): the timer's end is the opening
