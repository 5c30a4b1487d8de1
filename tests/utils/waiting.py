"""Waiting for what runs, workers and servers do: the one polling helper of the suite.

Tests wait for something observable (a stored state, a received request, an event in a
workflow's history), never for a fixed time. A check that must hold *after* time has
passed is written against a closed run or time skipped on the test server instead.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tests.utils.receivers import ReceivedRequest, WebhookReceiver

T = TypeVar("T")

TIMEOUT = 15.0
INTERVAL = 0.05


async def eventually(
    check: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = TIMEOUT,
    interval: float = INTERVAL,
    message: str | None = None,
) -> T:
    """Run ``check`` (sync or async) until it returns something truthy; that value.

    A check either returns its answer (falsy: not yet) or asserts (an AssertionError: not
    yet). After ``timeout`` seconds it fails with ``message`` and the last assertion error
    or the last answer. Any other exception (also ``pytest.fail``) ends the wait at once.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        failure: AssertionError | None = None
        answer: Any = None
        try:
            answer = check()
            if inspect.isawaitable(answer):
                answer = await answer
        except AssertionError as exc:
            failure = exc
        else:
            if answer:
                return answer  # type: ignore[no-any-return]
        if loop.time() >= deadline:
            what = message or getattr(check, "__name__", "the check")
            if failure is not None:
                raise AssertionError(f"{what} (after {timeout:g} s): {failure}") from failure
            raise AssertionError(f"{what} (after {timeout:g} s; last answer {answer!r})")
        await asyncio.sleep(interval)


def eventually_blocking(
    check: Callable[[], T],
    *,
    timeout: float = TIMEOUT,
    interval: float = INTERVAL,
    message: str | None = None,
) -> T:
    """`eventually` for synchronous code (the e2e tests, the benchmarks' stack start), also
    when an event loop runs in this thread (it blocks it: the check is synchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        failure: AssertionError | None = None
        answer: Any = None
        try:
            answer = check()
        except AssertionError as exc:
            failure = exc
        else:
            if answer:
                return answer
        if time.monotonic() >= deadline:
            what = message or getattr(check, "__name__", "the check")
            if failure is not None:
                raise AssertionError(f"{what} (after {timeout:g} s): {failure}") from failure
            raise AssertionError(f"{what} (after {timeout:g} s; last answer {answer!r})")
        time.sleep(interval)


async def received(
    hook: WebhookReceiver, count: int, *, timeout: float = 20
) -> list[ReceivedRequest]:
    """Every request ``hook`` has received, once there are at least ``count``."""

    def arrived() -> list[ReceivedRequest]:
        requests = hook.requests
        assert len(requests) >= count, f"{len(requests)} so far: {[r.json for r in requests]}"
        return requests

    return await eventually(
        arrived, timeout=timeout, message=f"{count} requests reach {hook.base_url}"
    )
