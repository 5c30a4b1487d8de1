"""SQLite writers drill (issue 9, point 5): many concurrent writers across the API and the
worker of a `nudge dev` stack, and not one "database is locked".

For ``--minutes`` (default 10), ``--writers`` (default 50) HTTP clients write through the
API: each creates and updates its contacts, enrolls them in a journey, posts their incoming
messages (which end the enrollment) and queues notifications. Meanwhile the worker writes
deliveries and messages: every enrollment sends a message, every notification is sent, and
a follow-up whose ITSM answers a sliding window of tickets keeps starting, reminding and
resolving records. Everything runs on loopback; schedules run ``TIME_SCALE`` times faster.

It prints its figures (requests by kind and status, 5xx, lock errors in any process log,
throughput) and exits non-zero when a write failed with a lock error, any 5xx or transport
error was met, or a status other than the expected ones was answered.

    .venv/bin/python -m bench.drill_sqlite_writers [--minutes 10] [--writers 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import Stack, dev_stack, percentile
from tests.utils.receivers import WebhookReceiver

TIME_SCALE = 600  # 10 minutes of schedule take 1 s
CONTACTS_PER_WRITER = 4  # each writer cycles through its own contacts: creates, then updates
APPROVERS = 10
TICKET_WINDOW = 30  # tickets the ITSM answers at a time ...
TICKETS_MOVED = 5  # ... of which this many are replaced by new ones ...
ROTATE_SECONDS = 10.0  # ... this often
STOP_GRACE_SECONDS = 60.0  # requests in flight at the end get this long
LOCKED = re.compile(r"database is locked", re.IGNORECASE)
# The dev stack's own limits would answer 429 under this load; the drill is about locks.
ENV = {
    "NUDGE_RATE_LIMIT_EVENTS": "100000/second",
    "NUDGE_RATE_LIMIT_NOTIFICATIONS": "100000/second",
}
HOOK = "drill-hook"


@dataclass
class Tally:
    """What the writers met: answers by operation and status, and the failures."""

    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    unexpected: Counter[tuple[str, int]] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def five_xx(self) -> int:
        return sum(n for (_, status), n in self.statuses.items() if status >= 500)


async def answer(
    tally: Tally,
    op: str,
    sending: Awaitable[httpx.Response],
    expected: tuple[int, ...],
) -> httpx.Response | None:
    """Send one request, tally its answer; None when it got none."""
    started = time.perf_counter()
    try:
        response = await sending
    except httpx.HTTPError as exc:
        tally.transport_errors[f"{op}: {type(exc).__name__}"] += 1
        return None
    tally.latencies_ms.setdefault(op, []).append((time.perf_counter() - started) * 1000)
    tally.statuses[(op, response.status_code)] += 1
    if response.status_code >= 500:
        tally.server_errors.append(f"{op} {response.status_code}: {response.text[:300]}")
    elif response.status_code not in expected:
        tally.unexpected[(op, response.status_code)] += 1
        if tally.unexpected[(op, response.status_code)] == 1:
            print(f"unexpected {op} {response.status_code}: {response.text[:300]}", flush=True)
    return response


def ok(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 300:
        raise RuntimeError(
            f"set-up: {response.request.method} {response.request.url.path}"
            f" answered {response.status_code}: {response.text[:500]}"
        )
    body: dict[str, Any] = response.json() if response.content else {}
    return body


def the_journey() -> dict[str, Any]:
    """Greets at once, nudges after an hour (6 s here), ends a day later; a reply ends it."""
    return {
        "name": "Drill welcome",
        "trigger": {"type": "api"},
        "settings": {"exit_conditions": ["incoming_message"]},
        "steps": [
            {
                "id": "greet",
                "type": "send_message",
                "channel": HOOK,
                "message": {"kind": "text", "text": "Welcome {{ contact.name }}"},
            },
            {"id": "pause", "type": "wait", "minutes": 60},
            {
                "id": "nudge",
                "type": "send_message",
                "channel": HOOK,
                "message": {"kind": "text", "text": "Still there, {{ contact.name }}?"},
            },
            {"id": "rest", "type": "wait", "minutes": 1440},
            {"id": "done", "type": "end"},
        ],
    }


def the_followup(itsm: WebhookReceiver) -> dict[str, Any]:
    """Polls the ITSM every 10 minutes (1 s here) and reminds each ticket's approver every
    two hours (12 s here), 10 times; a ticket that leaves the window is resolved."""
    return {
        "name": "Drill approvals",
        "status": "active",
        "data_extraction": {
            "polling_minutes": 10,
            "integrations": [
                {"name": "tickets", "url": itsm.base_url + "/tickets", "timeout_seconds": 30}
            ],
            "looping_element": "tickets.result",
            "reconciliation_id": "number",
        },
        "recipients": {"user": {"source": "approver", "match_on": "email"}},
        "message": {"kind": "text", "text": "Please approve {{ followup.data.number }}"},
        "channel": HOOK,
        "schedule": {"notify_minutes": 120, "attempts": 10},
    }


def tickets(first: int) -> dict[str, Any]:
    return {
        "result": [
            {"number": f"DRILL{i:07d}", "approver": f"approver-{i % APPROVERS}@drill.test"}
            for i in range(first, first + TICKET_WINDOW)
        ]
    }


async def set_up(api: httpx.AsyncClient, hook: WebhookReceiver, itsm: WebhookReceiver) -> str:
    """The channel, the approvers, the journey (published) and the follow-up; the journey id."""
    ok(await api.put(f"/v1/channels/{HOOK}", json={"type": "webhook", "config": {"url": hook.url}}))
    for i in range(APPROVERS):
        body = {"name": f"Approver {i}", "email": f"approver-{i}@drill.test"}
        ok(await api.put(f"/v1/contacts/approver-{i}", json=body))
    journey_id: str = ok(await api.post("/v1/journeys", json=the_journey()))["id"]
    ok(await api.post(f"/v1/journeys/{journey_id}/publish"))
    itsm.serve_json("/tickets", tickets(0))
    ok(await api.post("/v1/followups", json=the_followup(itsm)))
    return journey_id


async def writer(
    api: httpx.AsyncClient, tally: Tally, number: int, journey_id: str, deadline: float
) -> None:
    """Until the deadline: update a contact, enroll it, and (every other round) post its
    reply, which ends the enrollment; every fourth round also queue a notification."""
    round_ = 0
    while time.monotonic() < deadline:
        contact = f"w{number}-{round_ % CONTACTS_PER_WRITER}"
        body = {"name": f"Writer {number} round {round_}", "email": f"{contact}@drill.test"}
        await answer(tally, "put_contact", api.put(f"/v1/contacts/{contact}", json=body), (200,))
        enrollment = {"contact_id": contact, "variables": {"round": str(round_)}}
        # 409: already in the journey (its previous round had no reply), or its previous
        # run is still closing.
        await answer(
            tally,
            "enroll",
            api.post(f"/v1/journeys/{journey_id}/enrollments", json=enrollment),
            (201, 409),
        )
        if round_ % 2 == 0:
            reply = {
                "contact_id": contact,
                "direction": "incoming",
                "channel": "chat",
                "text": f"reply {round_}",
                "message_id": uuid.uuid4().hex,
            }
            await answer(tally, "event", api.post("/v1/events/messages", json=reply), (202,))
        if round_ % 4 == 1:
            notification = {
                "contact_id": contact,
                "channel": HOOK,
                "message": {"kind": "text", "text": f"Notification {round_}"},
            }
            key = {"Idempotency-Key": uuid.uuid4().hex}
            await answer(
                tally,
                "notify",
                api.post("/v1/notifications", json=notification, headers=key),
                (202,),
            )
        round_ += 1


async def rotate_tickets(itsm: WebhookReceiver, deadline: float) -> int:
    """Slide the ITSM's window of tickets until the deadline; how many tickets were served."""
    first = 0
    while time.monotonic() + ROTATE_SECONDS < deadline:
        await asyncio.sleep(ROTATE_SECONDS)
        first += TICKETS_MOVED
        itsm.serve_json("/tickets", tickets(first))
    return first + TICKET_WINDOW


def lock_errors(root: Path) -> dict[str, int]:
    """Lines naming "database is locked" in each log of the stack (API, worker, Temporal)."""
    found: dict[str, int] = {}
    for log in sorted(root.rglob("*.log")):
        with log.open(errors="replace") as lines:
            count = sum(1 for line in lines if LOCKED.search(line))
        found[str(log.relative_to(root))] = count
    return found


def sends_by_source(hook: WebhookReceiver) -> Counter[str]:
    sources: Counter[str] = Counter()
    for request in hook.requests:
        source = request.json.get("source", {}) if isinstance(request.json, dict) else {}
        sources[str(source.get("type", "?"))] += 1
    return sources


async def drill(stack: Stack, root: Path, minutes: float, writers: int) -> dict[str, Any]:
    tally = Tally()
    headers = {"Authorization": f"Bearer {stack.key}"}
    # Idle connections are dropped before the API's keep-alive timeout (5 s) could close
    # one under a request being sent: a transport error is then the API's doing.
    limits = httpx.Limits(
        max_connections=writers + 8, max_keepalive_connections=writers + 8, keepalive_expiry=2
    )
    with WebhookReceiver() as hook, WebhookReceiver() as itsm:
        async with httpx.AsyncClient(
            base_url=stack.api, headers=headers, timeout=60, limits=limits
        ) as api:
            journey_id = await set_up(api, hook, itsm)
            started = time.monotonic()
            deadline = started + minutes * 60
            rotation = asyncio.create_task(rotate_tickets(itsm, deadline))
            runs = [writer(api, tally, n, journey_id, deadline) for n in range(writers)]
            await asyncio.wait_for(asyncio.gather(*runs), minutes * 60 + STOP_GRACE_SECONDS)
            elapsed = time.monotonic() - started
            tickets_served = await rotation
        sends = sends_by_source(hook)
    locked = lock_errors(root)
    latencies = {
        op: {"p50_ms": round(percentile(v, 50), 1), "p99_ms": round(percentile(v, 99), 1)}
        for op, v in sorted(tally.latencies_ms.items())
    }
    return {
        "minutes": round(elapsed / 60, 2),
        "http_writers": writers,
        "requests": tally.requests,
        "requests_per_second": round(tally.requests / elapsed, 1),
        "by_status": {f"{op} {status}": n for (op, status), n in sorted(tally.statuses.items())},
        "latency": latencies,
        "5xx": tally.five_xx,
        "5xx_examples": tally.server_errors[:5],
        "transport_errors": dict(tally.transport_errors),
        "unexpected_statuses": {f"{op} {s}": n for (op, s), n in tally.unexpected.items()},
        "worker_sends": dict(sends),
        "worker_sends_per_second": round(sum(sends.values()) / elapsed, 1),
        "tickets_served": tickets_served,
        "database_is_locked_in_logs": locked,
    }


def failures(report: dict[str, Any]) -> list[str]:
    missed = []
    locked = sum(report["database_is_locked_in_logs"].values())
    if locked:
        missed.append(f"{locked} log lines say 'database is locked'")
    if report["5xx"]:
        missed.append(f"{report['5xx']} answers were 5xx")
    if report["transport_errors"]:
        missed.append(f"requests got no answer: {report['transport_errors']}")
    if report["unexpected_statuses"]:
        missed.append(f"unexpected statuses: {report['unexpected_statuses']}")
    if not report["worker_sends"].get("journey") or not report["worker_sends"].get("followup"):
        missed.append(f"the worker did not write for both features: {report['worker_sends']}")
    return missed


def main(minutes: float, writers: int, keep_logs: Path | None) -> int:
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        with dev_stack(root, time_scale=TIME_SCALE, env=ENV) as stack:
            report = asyncio.run(drill(stack, root, minutes, writers))
        if keep_logs is not None:
            keep_logs.mkdir(parents=True, exist_ok=True)
            for log in root.rglob("*.log"):
                shutil.copy(log, keep_logs / log.name)
    missed = failures(report)
    report["failures"] = missed
    print(json.dumps(report, indent=2), flush=True)
    print("FAILED: " + "; ".join(missed) if missed else "passed", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--writers", type=int, default=50)
    parser.add_argument("--keep-logs", type=Path, help="copy the stack's logs here")
    args = parser.parse_args()
    sys.exit(main(args.minutes, args.writers, args.keep_logs))
