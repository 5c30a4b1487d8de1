"""What the benchmarks share: a `nudge dev` stack, bare-workflow baselines, measurements."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client
from temporalio.worker import Worker

from bench.bare import Bare, noop
from tests.test_dev_stack import DevRun, descendants, running_dev


@dataclass
class Stack:
    run: DevRun
    temporal_address: str

    @property
    def api(self) -> str:
        return self.run.api

    @property
    def key(self) -> str:
        return self.run.demo_key()

    def worker_pid(self) -> int:
        for pid in descendants(self.run.process.pid):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"nudge" in cmdline and b"worker" in cmdline:
                return pid
        raise RuntimeError("no worker process under nudge dev")

    def worker_peak_mb(self) -> float:
        """The worker's peak resident memory (VmHWM) so far."""
        status = Path(f"/proc/{self.worker_pid()}/status").read_text()
        found = re.search(r"VmHWM:\s+(\d+) kB", status)
        return int(found.group(1)) / 1024 if found else float("nan")


@contextmanager
def dev_stack(
    root: Path, time_scale: float = 1, env: dict[str, str] | None = None
) -> Iterator[Stack]:
    """`nudge dev` on free ports and a fresh data dir, as `make dev` runs it; ``env`` adds
    settings (``NUDGE_*``) of its API and worker. Its output is under ``root / "logs"``."""
    env = dict(env or {})
    if time_scale != 1:
        env["NUDGE_TIME_SCALE"] = str(time_scale)
    with running_dev(root / "data", root / "logs", env) as run:
        address = re.search(r"^\s*Temporal\s+(\d[\d.]*:\d+)", run.output(), re.MULTILINE)
        assert address, run.output()
        yield Stack(run=run, temporal_address=address.group(1))


async def bare_workflows(client: Client, count: int) -> float:
    """Seconds to start and complete ``count`` bare workflows with one no-op activity."""
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[Bare], activities=[noop]):
        started = time.perf_counter()
        limit = asyncio.Semaphore(64)

        async def one(i: int) -> None:
            # Waiting counts against the limit too: the server caps concurrent long-polls.
            async with limit:
                handle = await client.start_workflow(Bare.run, id=f"{queue}-{i}", task_queue=queue)
                await handle.result()

        await asyncio.gather(*(one(i) for i in range(count)))
        return time.perf_counter() - started


async def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(every)
    raise TimeoutError(what)


class ServerError(RuntimeError):
    """A 5xx answered to a benchmark: a failure it reports, never retried to get through."""


def ok(response: httpx.Response) -> httpx.Response:
    """The response when it succeeded; a 5xx raises ``ServerError`` naming the request and
    its answer, any other error status ``httpx.HTTPStatusError``."""
    if response.status_code >= 500:
        request = response.request
        raise ServerError(
            f"{request.method} {request.url.path} answered {response.status_code}:"
            f" {response.text[:500]}"
        )
    return response.raise_for_status()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]
