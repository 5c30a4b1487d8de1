"""The worker's sandbox catches non-deterministic calls in workflow code, Nudge's own included."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import datetime
from typing import Any

from temporalio import workflow
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from nudge.workflows import followup_poller

# This module is workflow code too (the sandbox loads it for every run): the worker's
# module, with its database and HTTP imports, passes through.
with workflow.unsafe.imports_passed_through():
    from nudge.workers.worker import sandbox_runner


@workflow.defn(name="TestReadsTheClock")
class ReadsTheClock:
    @workflow.run
    async def run(self) -> str:
        return datetime.now().isoformat()  # the wall clock differs on replay


@workflow.defn(name="TestReadsTheClockOfANudgeWorkflowModule")
class ReadsTheClockOfANudgeWorkflowModule:
    """Reads the clock through the `datetime` that Nudge's poller workflow module imported:
    the real one if that module were passed through the sandbox, the guarded one when the
    sandbox loads Nudge's workflow code itself."""

    @workflow.run
    async def run(self) -> str:
        return followup_poller.datetime.now().isoformat()


async def failed_workflow_task(handle: WorkflowHandle[Any, Any]) -> str:
    """The failure message of the run's first failed workflow task, waiting up to 10 s."""
    for _ in range(200):
        async for event in handle.fetch_history_events():
            if event.HasField("workflow_task_failed_event_attributes"):
                return event.workflow_task_failed_event_attributes.failure.message
        description = await handle.describe()
        assert description.close_time is None, "the run finished: nothing stopped it"
        await asyncio.sleep(0.05)
    raise AssertionError("no workflow task failed")


async def run_until_a_task_fails(env: WorkflowEnvironment, workflow_class: type) -> str:
    task_queue = f"sandbox-{uuid.uuid4().hex[:8]}"
    async with Worker(
        env.client,
        task_queue=task_queue,
        workflows=[workflow_class],
        workflow_runner=sandbox_runner(),
    ):
        handle = await env.client.start_workflow(
            workflow_class.run,  # type: ignore[attr-defined]
            id=f"sandbox-test/{uuid.uuid4().hex}",
            task_queue=task_queue,
        )
        try:
            return await failed_workflow_task(handle)
        finally:
            with contextlib.suppress(RPCError):  # a run that finished cannot be terminated
                await handle.terminate("test over")


async def test_a_clock_read_in_workflow_code_fails_the_workflow_task(
    time_env: WorkflowEnvironment,
) -> None:
    message = await run_until_a_task_fails(time_env, ReadsTheClock)
    assert "Cannot access datetime.datetime.now" in message, message


async def test_nudge_workflow_modules_are_sandboxed_not_passed_through(
    time_env: WorkflowEnvironment,
) -> None:
    message = await run_until_a_task_fails(time_env, ReadsTheClockOfANudgeWorkflowModule)
    assert "Cannot access datetime.datetime.now" in message, message
