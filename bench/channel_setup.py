"""What the channel benchmarks share: a `nudge dev` stack with a tenant of its own and a
WhatsApp channel on a fake Cloud API that notes when each message reached it, contacts with
phones, webhook bodies signed as Meta signs them, posted from an async client at a steady
pace, and the figures (percentiles, CPU seconds per process, the machine's load).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from bench.common import Stack, dev_stack, ok, percentile
from nudge.dev.fake_whatsapp import FakeMessage, FakeWhatsApp, new_wamid
from tests.test_dev_stack import descendants, hermetic_env

TENANT = "bench-wa"
CHANNEL = "wa"
JsonObject = dict[str, Any]
Item = TypeVar("Item")


# --- the fake Cloud API ---------------------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    """A message the fake accepted, and when its request reached the fake."""

    message: FakeMessage
    at: float  # time.perf_counter()
    wall: float  # time.time(), to set beside Temporal's event times


class TimedWhatsApp(FakeWhatsApp):
    """`FakeWhatsApp` that notes when each send it accepts reached it."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._reached: dict[str, tuple[float, float]] = {}
        self._reached_lock = threading.Lock()

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> JsonObject:
        at, wall = time.perf_counter(), time.time()  # the body is read: the request is here
        answer = super().handle(method, target, headers, body)
        accepted = answer.get("messages", []) if method == "POST" else []
        with self._reached_lock:
            for message in accepted:
                self._reached[message["id"]] = (at, wall)
        return answer

    def arrivals(self) -> list[Arrival]:
        """Every accepted message with its arrival, oldest first."""
        with self._reached_lock:
            reached = dict(self._reached)
        return [Arrival(m, *reached[m.wamid]) for m in self.sent if m.wamid in reached]


def webhook_body(fake: FakeWhatsApp, value: JsonObject) -> bytes:
    """One `messages` change with this value, as `FakeWhatsApp.post_value` builds it."""
    document = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": fake.waba_id,
                "changes": [
                    {
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": fake.display_phone_number,
                                "phone_number_id": fake.phone_number_id,
                            },
                            **value,
                        },
                        "field": "messages",
                    }
                ],
            }
        ],
    }
    return json.dumps(document).encode()


def status_value(wamid: str, status: str, recipient: str) -> JsonObject:
    """A status webhook's value, as `FakeWhatsApp.send_status` posts it."""
    entry = {
        "id": wamid,
        "status": status,
        "timestamp": str(int(time.time())),
        "recipient_id": recipient,
    }
    return {"statuses": [entry]}


def text_value(wa_id: str, text: str, name: str) -> JsonObject:
    """A contact's text message, as `FakeWhatsApp.send_text` posts it."""
    message = {
        "from": wa_id,
        "id": new_wamid(wa_id),
        "timestamp": str(int(time.time())),
        "type": "text",
        "text": {"body": text},
    }
    return {"contacts": [{"profile": {"name": name}, "wa_id": wa_id}], "messages": [message]}


# --- posting webhooks -----------------------------------------------------------------------


@dataclass(frozen=True)
class Posted:
    """One webhook post: when it left (perf_counter and wall clock), how late against its
    slot in the schedule, its answer and how long that took."""

    at: float
    wall: float
    late_ms: float
    status: int
    ms: float
    error: str | None = None


class Poster:
    """Signs webhook bodies with the fake's app secret and posts them to its webhook URL."""

    def __init__(self, fake: FakeWhatsApp, http: httpx.AsyncClient) -> None:
        assert fake.webhook_url, "the channel sets the fake's webhook_url"
        self.fake, self.http, self.url = fake, http, fake.webhook_url

    async def post(self, value: JsonObject, late_ms: float = 0.0) -> Posted:
        body = webhook_body(self.fake, value)
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": self.fake.sign(body)}
        at, wall = time.perf_counter(), time.time()
        try:
            answer = await self.http.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            ms = (time.perf_counter() - at) * 1000
            return Posted(at, wall, late_ms, 0, ms, f"{type(exc).__name__}: {exc}")
        ms = (time.perf_counter() - at) * 1000
        error = None if answer.status_code == 200 else f"{answer.status_code} {answer.text[:200]}"
        return Posted(at, wall, late_ms, answer.status_code, ms, error)


async def paced(
    items: Sequence[Item],
    per_second: float,
    post: Callable[[Item, float], Coroutine[Any, Any, Posted]],
) -> list[Posted]:
    """``post(item, late_ms)`` for every item, the i-th at ``i / per_second`` s from the
    start whether or not the earlier ones were answered (a provider does not wait either)."""
    started = time.perf_counter()
    tasks: list[asyncio.Task[Posted]] = []
    for i, item in enumerate(items):
        slot = started + i / per_second
        delay = slot - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        late_ms = max(0.0, (time.perf_counter() - slot) * 1000)
        tasks.append(asyncio.create_task(post(item, late_ms)))
    return list(await asyncio.gather(*tasks))


# --- the stack, the tenant, the channel, contacts -------------------------------------------


@dataclass
class ChannelBench:
    stack: Stack
    fake: TimedWhatsApp
    api: httpx.AsyncClient  # the bench tenant's admin key
    poster: Poster
    tenant: str = TENANT
    channel: str = CHANNEL


def create_tenant(data_dir: Path, slug: str) -> str:
    """`nudge tenant create` on the stack's database; the tenant's admin key."""
    done = subprocess.run(
        [sys.executable, "-m", "nudge", "tenant", "create", slug, "--json"],
        env={**hermetic_env(), "NUDGE_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    key: str = json.loads(done.stdout.strip().splitlines()[-1])["api_key"]
    return key


async def whatsapp_channel(api: httpx.AsyncClient, fake: FakeWhatsApp, slug: str) -> None:
    config = {
        "phone_number_id": fake.phone_number_id,
        "access_token": fake.access_token,
        "app_secret": fake.app_secret,
        "verify_token": "bench-verify",
        "base_url": fake.base_url,
    }
    channel = ok(
        await api.put(f"/v1/channels/{slug}", json={"type": "whatsapp", "config": config})
    ).json()
    fake.webhook_url = channel["webhook_url"]


@asynccontextmanager
async def channel_bench(env: dict[str, str] | None = None) -> AsyncIterator[ChannelBench]:
    """`nudge dev` on a fresh data dir, a tenant of its own with a WhatsApp channel on a
    `TimedWhatsApp` that posts no receipts of its own; everything stopped on the way out."""
    with (
        tempfile.TemporaryDirectory() as root,
        dev_stack(Path(root), env=env) as stack,
        TimedWhatsApp() as fake,
    ):
        key = await asyncio.to_thread(create_tenant, Path(root) / "data", TENANT)
        headers = {"Authorization": f"Bearer {key}"}
        async with (
            httpx.AsyncClient(base_url=stack.api, headers=headers, timeout=120) as api,
            # As a provider would: its own connections, never the API key.
            httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64)) as hooks,
        ):
            await whatsapp_channel(api, fake, CHANNEL)
            yield ChannelBench(stack, fake, api, Poster(fake, hooks))


@dataclass(frozen=True)
class BenchContact:
    id: str
    phone: str  # E.164

    @property
    def wa_id(self) -> str:
        return self.phone.removeprefix("+")


async def add_contacts(
    api: httpx.AsyncClient, count: int, prefix: str, first_number: int = 0
) -> list[BenchContact]:
    """``count`` contacts with Spanish mobile numbers (+34 6…), made 16 at a time."""
    contacts = [BenchContact(f"{prefix}-{i}", f"+346{first_number + i:08d}") for i in range(count)]
    limit = asyncio.Semaphore(16)

    async def one(contact: BenchContact) -> None:
        async with limit:
            body = {"name": contact.id, "phone": contact.phone}
            ok(await api.put(f"/v1/contacts/{contact.id}", json=body))

    await asyncio.gather(*(one(c) for c in contacts))
    return contacts


async def open_windows(bench: ChannelBench, contacts: Sequence[BenchContact]) -> None:
    """Each contact writes once, which opens WhatsApp's 24-hour window for free-form sends.
    The text matches no journey's keywords."""
    limit = asyncio.Semaphore(8)

    async def one(contact: BenchContact) -> None:
        async with limit:
            posted = await bench.poster.post(text_value(contact.wa_id, "window", contact.id))
            if posted.error:
                raise RuntimeError(f"opening {contact.id}'s window: {posted.error}")

    await asyncio.gather(*(one(c) for c in contacts))


# --- figures ----------------------------------------------------------------------------------


def spread(values: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99 and max, rounded to 0.1."""
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": float("nan")}
    figures = {f"p{p}": percentile(list(values), p) for p in (50, 95, 99)}
    figures["max"] = max(values)
    return {k: round(v, 1) for k, v in figures.items()}


def stack_processes(stack: Stack) -> dict[str, int]:
    """The pids of the stack's Temporal server, API and worker."""
    found: dict[str, int] = {}
    for pid in descendants(stack.run.process.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"start-dev" in cmdline:
            found["temporal"] = pid
        elif b"nudge" in cmdline and b"worker" in cmdline:
            found["worker"] = pid
        elif b"nudge" in cmdline and b"api" in cmdline:
            found["api"] = pid
    return found


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User plus system CPU seconds each process has used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[name] = (int(fields[11]) + int(fields[12])) / tick
    return used


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores, /proc/stat) so far."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds the stack's processes, this one and everything else on the machine used
    between `start` and `stop` (2 cores give 2 CPU seconds a second)."""

    def __init__(self, stack: Stack) -> None:
        self.pids = {**stack_processes(stack), "bench": os.getpid()}
        self._before: dict[str, float] = {}
        self._machine = 0.0
        self._started = 0.0

    def start(self) -> None:
        self._before, self._started = cpu_seconds(self.pids), time.monotonic()
        self._machine = machine_busy_seconds()

    def stop(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self._started
        after = cpu_seconds(self.pids)
        used = {k: round(after[k] - self._before.get(k, 0.0), 1) for k in after}
        machine = machine_busy_seconds() - self._machine
        used["others on the machine"] = round(max(0.0, machine - sum(used.values())), 1)
        return {"elapsed_s": round(elapsed, 1), "cores": os.cpu_count(), "cpu_s": used}


def cpu_note(cpu: dict[str, Any]) -> str:
    """A CpuMeter's figures in a few words: CPU seconds per process over the run's seconds."""
    used = ", ".join(f"{name} {seconds:g}" for name, seconds in cpu["cpu_s"].items())
    return f"CPU s in {cpu['elapsed_s']:g} s on {cpu['cores']} cores: {used}"


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"
