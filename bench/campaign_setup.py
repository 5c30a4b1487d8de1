"""What the campaign and business-hours benchmarks share: a `nudge dev` stack with a tenant
of its own and an SMS channel on a fake Twilio that notes when each message reached it,
CSVs of phones, the memory of the stack's processes read from /proc while something runs,
and more `nudge worker` processes on the stack's task queue.

The stack runs with the per-tenant rate limits on events and notifications lifted (the
benchmarks measure the sends, not the limiter); everything else is as `make dev` runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from bench.channel_setup import create_tenant, stack_processes
from bench.common import Stack, dev_stack, ok
from nudge.dev.fake_twilio import FakeTwilio, _Answer
from nudge.dev.stack import DEV_EGRESS_ALLOW
from tests.test_dev_stack import hermetic_env

CHANNEL = "sms"
# Limits out of the way: a benchmark that posts 20 000 events measures Nudge, not the 429s.
UNLIMITED = {
    "NUDGE_RATE_LIMIT_EVENTS": "1000000/second",
    "NUDGE_RATE_LIMIT_NOTIFICATIONS": "1000000/second",
}


# --- the fake Twilio --------------------------------------------------------------------------


@dataclass(frozen=True)
class SmsArrival:
    """A message the fake accepted, and when its request reached the fake."""

    sid: str
    to: str
    body: str
    at: float  # time.perf_counter()
    wall: float  # time.time(), to set beside a schedule's opening or Temporal's event times


class TimedTwilio(FakeTwilio):
    """`FakeTwilio` (no automatic receipts) that notes when each message it accepts reached
    it: the moment its request's body had been read, before it is checked."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._arrivals: list[SmsArrival] = []
        self._arrivals_lock = threading.Lock()

    def _answer(self, method: str, path: str, headers: Mapping[str, str], raw: bytes) -> _Answer:
        at, wall = time.perf_counter(), time.time()
        answer = super()._answer(method, path, headers, raw)
        if answer.status == 201:
            payload = answer.payload
            arrival = SmsArrival(payload["sid"], payload["to"], payload["body"], at, wall)
            with self._arrivals_lock:
                self._arrivals.append(arrival)
        return answer

    def arrivals(self, prefix: str = "") -> list[SmsArrival]:
        """The accepted messages whose text starts with ``prefix``, in arrival order."""
        with self._arrivals_lock:
            found = list(self._arrivals)
        return sorted((a for a in found if a.body.startswith(prefix)), key=lambda a: a.at)

    def count(self, prefix: str = "") -> int:
        with self._arrivals_lock:
            return sum(1 for a in self._arrivals if a.body.startswith(prefix))


async def sms_channel(api: httpx.AsyncClient, fake: FakeTwilio, slug: str = CHANNEL) -> None:
    """The tenant's SMS channel on the fake; the fake is given its inbound webhook."""
    config = {
        "account_sid": fake.account_sid,
        "auth_token": fake.auth_token,
        "from": fake.numbers[0],
        "base_url": fake.base_url,
    }
    channel = ok(await api.put(f"/v1/channels/{slug}", json={"type": "sms", "config": config}))
    fake.inbound_url = channel.json()["webhook_url"]


# --- the stack and the tenant -----------------------------------------------------------------


@dataclass
class SmsBench:
    stack: Stack
    fake: TimedTwilio
    api: httpx.AsyncClient  # the bench tenant's admin key
    root: Path
    tenant: str
    channel: str = CHANNEL
    env: dict[str, str] | None = None  # the settings the stack's API and worker were given

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def pids(self) -> dict[str, int]:
        """The stack's Temporal server, API and worker."""
        return stack_processes(self.stack)


@asynccontextmanager
async def sms_bench(tenant: str, env: dict[str, str] | None = None) -> AsyncIterator[SmsBench]:
    """`nudge dev` on a fresh data dir (rate limits lifted, ``env`` added), a tenant of its
    own with an SMS channel on a `TimedTwilio`; everything stopped on the way out."""
    settings = {**UNLIMITED, **(env or {})}
    with (
        tempfile.TemporaryDirectory(prefix="nudge-bench-") as root,
        dev_stack(Path(root), env=settings) as stack,
        TimedTwilio() as fake,
    ):
        key = await asyncio.to_thread(create_tenant, Path(root) / "data", tenant)
        headers = {"Authorization": f"Bearer {key}"}
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        try:
            async with httpx.AsyncClient(
                base_url=stack.api, headers=headers, timeout=300, limits=limits
            ) as api:
                await sms_channel(api, fake)
                yield SmsBench(stack, fake, api, Path(root), tenant, env=settings)
        except BaseException:
            # The logs go with the data dir: show their end before they do.
            for name in ("stderr.log", "stdout.log"):
                tail = (Path(root) / "logs" / name).read_text(errors="replace")[-4000:]
                print(f"--- the stack's {name}, its end:\n{tail}", file=sys.stderr)
            raise


def stop_on_signals() -> None:
    """SIGTERM, SIGINT and SIGHUP cancel the running task (call it from the benchmark's main
    coroutine), so that its stack is stopped on the way out: under `timeout`, or after
    `nohup … &`, where SIGINT is ignored, the stack would else outlive the benchmark."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, task.cancel)


# --- CSVs and campaigns -----------------------------------------------------------------------


async def sent(
    api: httpx.AsyncClient, method: str, path: str, tries: int = 3, **options: Any
) -> httpx.Response:
    """The request's answer, sent again (up to ``tries`` in all) when the connection broke
    before an answer: for requests that are safe to repeat (a PUT, an event with its id)."""
    for attempt in range(tries):
        try:
            return await api.request(method, path, **options)
        except httpx.TransportError:
            if attempt == tries - 1:
                raise
            await asyncio.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def phone(number: int) -> str:
    """A Spanish mobile number (+34 6…), the ``number``-th of the benchmarks' range."""
    return f"+346{number:08d}"


def campaign_csv(rows: int, first_number: int = 0) -> bytes:
    """``rows`` rows of ``phone;name;due`` (distinct phones from ``first_number`` on)."""
    lines = ["phone;name;due"]
    lines += [f"{phone(first_number + i)};Name {i};{1 + i % 28:02d}/12/2026" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def campaign_spec(
    name: str, tag: str, mode: dict[str, Any], start: str | dict[str, str] = "now"
) -> dict[str, Any]:
    """A text campaign on the SMS channel whose every message starts with ``tag``."""
    return {
        "name": name,
        "separator": ";",
        "recipient_column": "phone",
        "channel": CHANNEL,
        "message": {"kind": "text", "text": tag + " Hi {{ row.name }}, due {{ row.due }}"},
        "start": start,
        "mode": mode,
    }


async def post_campaign(api: httpx.AsyncClient, csv: bytes, spec: dict[str, Any]) -> httpx.Response:
    """`POST /v1/campaigns`, multipart: the CSV as `file`, the spec as `campaign`."""
    return await api.post(
        "/v1/campaigns",
        files={"file": ("rows.csv", csv, "text/csv")},
        data={"campaign": json.dumps(spec)},
    )


async def create_campaign(api: httpx.AsyncClient, csv: bytes, spec: dict[str, Any]) -> str:
    created: str = ok(await post_campaign(api, csv, spec)).json()["id"]
    return created


# --- memory -------------------------------------------------------------------------------------


def status_kb(pid: int, field: str) -> int | None:
    """A ``VmRSS``/``VmHWM``-like field of /proc/<pid>/status, in kB (None: gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) if found else None


def peak_mb(pid: int) -> float:
    """The process's peak resident memory since it started (VmHWM)."""
    kb = status_kb(pid, "VmHWM")
    return round(kb / 1024, 1) if kb is not None else float("nan")


class RssSampler:
    """Reads a process's resident memory (VmRSS) every ``every`` seconds from a thread while
    the ``with`` block runs: its peak, and what it was when sampling began."""

    def __init__(self, pid: int, every: float = 0.02) -> None:
        self.pid, self.every = pid, every
        self.first_kb = self.peak_kb = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss", daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            kb = status_kb(self.pid, "VmRSS")
            if kb is not None:
                self.first_kb = self.first_kb or kb
                self.peak_kb = max(self.peak_kb, kb)
                self.samples += 1
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return round(self.peak_kb / 1024, 1)

    @property
    def first_mb(self) -> float:
        return round(self.first_kb / 1024, 1)


# --- more workers -------------------------------------------------------------------------------


@dataclass
class ExtraWorker:
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid


def worker_env(bench: SmsBench) -> dict[str, str]:
    """The settings `nudge dev` gives its worker (the data dir holds the database and the
    development secret key), with no `/metrics` of its own (one port per worker else)."""
    return {
        **hermetic_env(),
        **(bench.env or {}),
        "NUDGE_TEMPORAL_ADDRESS": bench.stack.temporal_address,
        "NUDGE_DATA_DIR": str(bench.data_dir),
        "NUDGE_PUBLIC_URL": bench.stack.api,
        "NUDGE_EGRESS_ALLOW": DEV_EGRESS_ALLOW,
        "NUDGE_WORKER_METRICS_ADDRESS": "",
        "PYTHONUNBUFFERED": "1",
    }


def _stop_worker(worker: ExtraWorker) -> None:
    if worker.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)
            worker.process.wait(timeout=5)


@contextlib.contextmanager
def extra_workers(bench: SmsBench, count: int, timeout: float = 90) -> Iterator[list[ExtraWorker]]:
    """``count`` more `nudge worker` processes on the stack's task queue, each in its own
    process group, polling once this yields; stopped (their groups) on the way out."""
    workers: list[ExtraWorker] = []
    logs = bench.root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    try:
        for i in range(count):
            log = logs / f"extra-worker-{i}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "nudge", "worker"],
                    env=worker_env(bench),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            workers.append(ExtraWorker(process, log))
        deadline = time.monotonic() + timeout
        for worker in workers:
            while "worker polling task queue" not in worker.log.read_text(errors="replace"):
                if worker.process.poll() is not None or time.monotonic() > deadline:
                    tail = worker.log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"an extra worker did not start:\n{tail}")
                time.sleep(0.2)
        yield workers
    finally:
        for worker in workers:
            _stop_worker(worker)


# --- runs' histories ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ActivitySpan:
    """One activity of a run: when it was scheduled, started and ended (wall clock), by
    which worker (its identity), and whether it completed."""

    name: str
    scheduled: float
    started: float | None
    ended: float | None
    worker: str | None
    completed: bool


async def activity_spans(client: Client, workflow_id: str) -> list[ActivitySpan]:
    """Every activity of the run's latest execution, in the order it was scheduled."""
    scheduled: dict[int, tuple[str, float]] = {}
    started: dict[int, tuple[float, str]] = {}
    ended: dict[int, tuple[float, bool]] = {}
    ends = {
        EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: ("activity_task_completed", True),
        EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: ("activity_task_failed", False),
        EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: ("activity_task_timed_out", False),
        EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED: ("activity_task_canceled", False),
    }
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        at = event.event_time.ToDatetime().replace(tzinfo=UTC).timestamp()
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            scheduled[event.event_id] = (name, at)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attributes = event.activity_task_started_event_attributes
            started[attributes.scheduled_event_id] = (at, attributes.identity)
        elif kind in ends:
            field, completed = ends[kind]
            attributes = getattr(event, f"{field}_event_attributes")
            ended[attributes.scheduled_event_id] = (at, completed)
    spans = []
    for event_id, (name, at) in sorted(scheduled.items()):
        begun = started.get(event_id)
        end = ended.get(event_id)
        spans.append(
            ActivitySpan(
                name=name,
                scheduled=at,
                started=begun[0] if begun else None,
                ended=end[0] if end else None,
                worker=begun[1] if begun else None,
                completed=bool(end and end[1]),
            )
        )
    return spans
