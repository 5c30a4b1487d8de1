"""The worker's sandbox catches non-deterministic calls in workflow code, Nudge's own included."""

from __future__ import annotations

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
# module, with its database and HTTP imports, and the test helpers pass through.
with workflow.unsafe.imports_passed_through():
    import pytest

    from nudge.workers.worker import sandbox_runner
    from tests.utils.waiting import eventually


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

    async def failure() -> str | None:
        async for event in handle.fetch_history_events():
            if event.HasField("workflow_task_failed_event_attributes"):
                message: str = event.workflow_task_failed_event_attributes.failure.message
                return message
        if (await handle.describe()).close_time is not None:
            pytest.fail("the run finished: nothing stopped it")
        return None

    found: str = await eventually(failure, timeout=10, message="a workflow task fails")
    return found


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
