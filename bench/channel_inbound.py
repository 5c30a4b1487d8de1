"""WhatsApp inbound benchmark on a `nudge dev` stack (see the README, "Benchmarks").

A tenant of its own with a WhatsApp channel on a fake Cloud API; K contacts (their 24-hour
window opened by a first message) enrolled in a journey that asks a question and then
answers it (`ask` → `send_message`), each waiting at the `ask`. Then each contact's reply,
a text signed as Meta signs it, is posted to `POST /v1/webhooks/{tenant}/{channel}` at a
steady pace (5 a second by default). The figure: from the webhook post until the journey's
next message reaches the fake (p50/p95/p99/max), with where that time goes, from each run's
Temporal history: the API's answer (which includes the signal), the workflow tasks and the
activities in between.

Target: p99 under 500 ms. The last line is the verdict; ``--strict`` exits 1 on a MISS.

    .venv/bin/python -m bench.channel_inbound [--contacts 100] [--per-second 5] [--strict]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from bench.channel_setup import (
    BenchContact,
    ChannelBench,
    CpuMeter,
    Posted,
    add_contacts,
    channel_bench,
    cpu_note,
    load_average,
    open_windows,
    paced,
    spread,
    text_value,
)
from bench.common import ok
from nudge.models.signals import JOURNEY_MESSAGE
from nudge.naming import journey_workflow_id

TARGET_P99_MS = 500.0
LIMIT = asyncio.Semaphore(16)
QUESTION = "Renew now?"
ANSWERED = "You said"


def asking_journey(channel: str) -> dict[str, Any]:
    return {
        "name": "Bench renewal question",
        "trigger": {"type": "api"},
        "settings": {},
        "steps": [
            {
                "id": "question",
                "type": "ask",
                "channel": channel,
                "message": {"kind": "text", "text": QUESTION},
                "variable": "reply",
                "timeout_minutes": 600,
            },
            {
                "id": "thanks",
                "type": "send_message",
                "channel": channel,
                "message": {"kind": "text", "text": ANSWERED + " {{ variables.reply }}"},
            },
        ],
    }


def texts_to(bench: ChannelBench, text: str) -> dict[str, Any]:
    """The fake's arrivals whose text starts with ``text``, by recipient (the first each)."""
    found: dict[str, Any] = {}
    for arrival in bench.fake.arrivals():
        body = arrival.message.body.get("text", {}).get("body", "")
        if body.startswith(text):
            found.setdefault(arrival.message.to, arrival)
    return found


async def enrollments(bench: ChannelBench, journey_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = ok(
            await bench.api.get(f"/v1/journeys/{journey_id}/enrollments", params=params)
        ).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items


async def waiting_at_the_ask(bench: ChannelBench, count: int) -> tuple[str, list[BenchContact]]:
    """``count`` contacts enrolled and each waiting for a reply; the journey's id."""
    contacts = await add_contacts(bench.api, count, "asked", first_number=500_000)
    await open_windows(bench, contacts)
    created = ok(await bench.api.post("/v1/journeys", json=asking_journey(bench.channel))).json()
    journey_id: str = created["id"]
    ok(await bench.api.post(f"/v1/journeys/{journey_id}/publish"))

    async def enroll(contact: BenchContact) -> None:
        async with LIMIT:
            body = {"contact_id": contact.id, "variables": {}}
            ok(await bench.api.post(f"/v1/journeys/{journey_id}/enrollments", json=body))

    await asyncio.gather(*(enroll(c) for c in contacts))
    deadline = time.monotonic() + max(120.0, count * 1.0)
    while True:
        asked = texts_to(bench, QUESTION)
        waiting = [
            e
            for e in await enrollments(bench, journey_id)
            if e["state"] == "active" and e["current_step"] == "question" and e["waiting_until"]
        ]
        if len(asked) >= count and len(waiting) >= count:
            return journey_id, contacts
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(asked)} asked, {len(waiting)} of {count} waiting")
        await asyncio.sleep(0.5)


@dataclass
class Reply:
    contact: BenchContact
    posted: Posted | None = None
    arrived_at: float | None = None  # perf_counter at the fake
    arrived_wall: float | None = None

    @property
    def ms(self) -> float | None:
        if self.posted is None or self.arrived_at is None:
            return None
        return (self.arrived_at - self.posted.at) * 1000


async def answers_arrive(bench: ChannelBench, replies: list[Reply], wait_s: float) -> None:
    """Note when each reply's answer reached the fake; stop after ``wait_s`` without all."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        arrived = texts_to(bench, ANSWERED)
        for reply in replies:
            arrival = arrived.get(reply.contact.wa_id)
            if arrival is not None and reply.arrived_at is None:
                reply.arrived_at, reply.arrived_wall = arrival.at, arrival.wall
        if all(r.arrived_at is not None for r in replies):
            return
        await asyncio.sleep(0.1)


# Where the time goes: milestones of each reply, from its post to its answer at the fake. The
# activities' `started` events carry the time the worker took the task.
SIGNAL = "signal in history"
ANSWERED_API = "API answered"
AT_THE_FAKE = "answer reached the fake"
SEGMENTS = (
    ("API: store the message, then signal", "posted", SIGNAL),
    ("API: after the signal until its answer", SIGNAL, ANSWERED_API),
    ("signal → workflow task 1 starts", SIGNAL, "workflow task 1 started"),
    ("workflow task 1", "workflow task 1 started", "workflow task 1 completed"),
    ("save_journey_answer waits for a worker", "save answer scheduled", "save answer started"),
    ("save_journey_answer runs", "save answer started", "save answer completed"),
    ("answer saved → workflow task 2 starts", "save answer completed", "workflow task 2 started"),
    ("workflow task 2", "workflow task 2 started", "workflow task 2 completed"),
    ("send_journey_message waits for a worker", "send scheduled", "send started"),
    ("send_journey_message until the fake", "send started", AT_THE_FAKE),
    ("total", "posted", AT_THE_FAKE),
)
ACTIVITIES = {"save_journey_answer": "save answer", "send_journey_message": "send"}


async def milestones(client: Client, workflow_id: str, reply: Reply) -> dict[str, float]:
    """Milliseconds from the reply's post to each milestone of its run after it: the
    signal, the workflow tasks and the activities, the answer reaching the fake."""
    assert reply.posted is not None
    origin = reply.posted.wall
    found: dict[str, float] = {"posted": 0.0, ANSWERED_API: reply.posted.ms}
    if reply.arrived_wall is not None:
        found[AT_THE_FAKE] = (reply.arrived_wall - origin) * 1000
    names: dict[int, str] = {}
    task = 0
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        at = (event.event_time.ToDatetime().timestamp() - origin) * 1000
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            signal = event.workflow_execution_signaled_event_attributes.signal_name
            if signal == JOURNEY_MESSAGE.name and at > -1000:  # this reply's, not earlier
                found[SIGNAL] = at
        elif SIGNAL not in found:
            continue
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            task += 1
            found[f"workflow task {task} started"] = at
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            found[f"workflow task {task} completed"] = at
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            names[event.event_id] = ACTIVITIES.get(name, name)
            found[f"{names[event.event_id]} scheduled"] = at
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            scheduled = event.activity_task_started_event_attributes.scheduled_event_id
            found[f"{names.get(scheduled, '?')} started"] = at
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            scheduled = event.activity_task_completed_event_attributes.scheduled_event_id
            found[f"{names.get(scheduled, '?')} completed"] = at
            if names.get(scheduled) == "send":
                break
    return found


def segments(found: dict[str, float]) -> dict[str, float]:
    """Each segment's milliseconds, for the segments whose ends this reply has."""
    return {
        name: found[end] - found[begin]
        for name, begin, end in SEGMENTS
        if begin in found and end in found
    }


async def where_time_goes(
    bench: ChannelBench, journey_id: str, replies: list[Reply]
) -> dict[str, Any]:
    """Each segment's p50 and p99 over the replies, and its mean over the slowest 5 %; the
    slowest replies' moments in the run."""
    client = await Client.connect(bench.stack.temporal_address)
    timed: list[tuple[Reply, dict[str, float]]] = []

    async def one(reply: Reply) -> None:
        async with LIMIT:
            workflow_id = journey_workflow_id(bench.tenant, journey_id, reply.contact.id)
            timed.append((reply, segments(await milestones(client, workflow_id, reply))))

    await asyncio.gather(*(one(r) for r in replies if r.posted is not None))
    timed.sort(key=lambda pair: pair[1].get("total", float("inf")))
    slowest = timed[-max(1, len(timed) // 20) :]
    table: dict[str, dict[str, float | None]] = {}
    for name, _begin, _end in SEGMENTS:
        values = [found[name] for _, found in timed if name in found]
        slow = [found[name] for _, found in slowest if name in found]
        if values:
            figures = spread(values)
            table[name] = {
                "p50_ms": figures["p50"],
                "p99_ms": figures["p99"],
                "slowest_5pct_mean_ms": round(statistics.fmean(slow), 1) if slow else None,
            }
    first = min(r.posted.at for r, _ in timed if r.posted is not None)
    moments = [
        {"posted_at_s": round(r.posted.at - first, 2), "total_ms": round(found["total"], 1)}
        for r, found in slowest
        if r.posted is not None and "total" in found
    ]
    return {"segments": table, "slowest": moments}


async def main(count: int, per_second: float) -> dict[str, Any]:
    async with channel_bench() as bench:
        report: dict[str, Any] = {"target_p99_ms": TARGET_P99_MS}
        started = time.perf_counter()
        journey_id, contacts = await waiting_at_the_ask(bench, count)
        report["setup"] = {
            "waiting_at_the_ask": len(contacts),
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(json.dumps({"setup": report["setup"]}), flush=True)
        await asyncio.sleep(2)  # let the questions' last bookkeeping settle
        replies = [Reply(c) for c in contacts]
        meter = CpuMeter(bench.stack)
        load_before = load_average()
        meter.start()
        started = time.perf_counter()

        async def post(reply: Reply, late_ms: float) -> Posted:
            value = text_value(reply.contact.wa_id, "Yes please", reply.contact.id)
            reply.posted = await bench.poster.post(value, late_ms)
            return reply.posted

        posted = await paced(replies, per_second, post)
        await answers_arrive(bench, replies, wait_s=30)
        elapsed = time.perf_counter() - started
        report["cpu"] = meter.stop()
        report["load"] = {"before": load_before, "after": load_average()}
        latencies = [ms for r in replies if (ms := r.ms) is not None]
        errors = [p.error for p in posted if p.error]
        report["replies"] = {
            "posted": len(posted),
            "seconds": round(elapsed, 1),
            "per_second": round((len(posted) - 1) / (posted[-1].at - posted[0].at or 1), 1),
            "answered": len(latencies),
            "to_next_message_ms": spread(latencies),
            "api_answer_ms": spread([p.ms for p in posted]),
            "late_ms": spread([p.late_ms for p in posted]),
            "errors": len(errors),
            "first_errors": errors[:3],
        }
        report["where_time_goes"] = await where_time_goes(bench, journey_id, replies)
        return report


def verdict(report: dict[str, Any]) -> tuple[bool, str]:
    replies = report["replies"]
    figures = replies["to_next_message_ms"]
    passed = (
        replies["answered"] == replies["posted"]
        and replies["errors"] == 0
        and figures["p99"] < TARGET_P99_MS
    )
    line = (
        f"{'PASS' if passed else 'MISS'} channel_inbound: {replies['posted']} replies at"
        f" {replies['per_second']}/s, post → next message p50 {figures['p50']} / p95"
        f" {figures['p95']} / p99 {figures['p99']} / max {figures['max']} ms (target p99 <"
        f" {TARGET_P99_MS:g}), API answer p99 {replies['api_answer_ms']['p99']} ms,"
        f" {replies['answered']}/{replies['posted']} answered, {replies['errors']} errors;"
        f" {cpu_note(report['cpu'])}, load {report['load']['after']}"
    )
    if not passed:
        slow = {
            name: figures["slowest_5pct_mean_ms"] or 0.0
            for name, figures in report["where_time_goes"]["segments"].items()
            if name != "total"
        }
        worst = max(slow, key=lambda name: slow[name])
        line += f"; the slowest 5 % spend most in {worst} ({slow[worst]} ms on average)"
    return passed, line


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=100)
    parser.add_argument("--per-second", type=float, default=5)
    parser.add_argument("--strict", action="store_true", help="exit 1 on a MISS")
    args = parser.parse_args()
    result = asyncio.run(main(args.contacts, args.per_second))
    print(json.dumps(result, indent=2))
    passed, line = verdict(result)
    print(line, flush=True)
    sys.exit(1 if args.strict and not passed else 0)
