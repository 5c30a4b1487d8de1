"""Waiting in workflow code: a timer that an event can cut short."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow


async def wait_until(condition: Callable[[], bool], limit: timedelta, summary: str) -> bool:
    """Wait for ``condition`` or until ``limit`` has passed; True when the condition came first.

    `workflow.wait_condition` raises on timeout, and here a timeout is the normal case:
    the schedule is due.
    """
    try:
        await workflow.wait_condition(condition, timeout=limit, timeout_summary=summary)
    except TimeoutError:
        return False
    return True
