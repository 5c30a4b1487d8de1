"""Bare workflows: the floor Nudge's workflows are measured against.

A module of its own, importing nothing but temporalio, so the workflow sandbox loads it as is.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="bench_noop")
async def noop() -> None:
    return None


@workflow.defn(name="BenchBare")
class Bare:
    """A workflow with one no-op activity: the floor any real workflow is measured against."""

    @workflow.run
    async def run(self) -> None:
        await workflow.execute_activity(noop, start_to_close_timeout=timedelta(seconds=30))


@workflow.defn(name="BenchWaiter")
class Waiter:
    """A workflow that waits for one signal, then completes."""

    def __init__(self) -> None:
        self._done = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self._done)

    @workflow.signal
    def finish(self) -> None:
        self._done = True
