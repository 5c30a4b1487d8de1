"""Closed-hours benchmark on a `nudge dev` stack (see the README, "Benchmarks").

A tenant of its own with an SMS channel on a fake Twilio (no receipts) that notes when each
message reached it, and a `default` schedule (UTC) that is closed now, with its
`unavailable_message` and `notify_when_available` enabled (texts). The set-up: N contacts
(``--contacts``, 10 000) with phones; each writes (`POST /v1/events/messages`, incoming,
"hello"), which gets the closed message, then writes "yes", which subscribes it (the first
yes starts the opening watch `business-hours/<tenant>/default`); ``--in-flight`` (50)
contacts at a time. Then, once every closed message has reached the fake, the schedule is
put again with an opening at the next whole minute at least ``--lead`` (90) seconds away:
the watch, woken by the edit, plans that opening and sleeps until it. (With ``--open-in S``
the schedule opens S seconds after the start from the first and is never edited; the
set-up must end before then.)

Figures: how long each step of the set-up took; from the opening to the first and the last
"available again" message at the fake, and whether every contact got exactly one (and
exactly one closed message); the watch's activities from its history (when each batch of
`notify_waiting` ran, beside the opening). Target: every contact told within 60 s of the
opening, each once. The last line is the verdict; ``--strict`` exits 1 on a MISS.

    .venv/bin/python -m bench.business_hours [--contacts 10000] [--in-flight 50]
        [--lead 90 | --open-in 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import time
import uuid
from collections import Counter
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from temporalio.client import Client

from bench.campaign_setup import (
    SmsBench,
    activity_spans,
    peak_mb,
    phone,
    sent,
    sms_bench,
    stop_on_signals,
)
from bench.channel_setup import CpuMeter, cpu_note, load_average, spread
from bench.common import ok
from nudge.models.business_hours import WEEKDAYS
from nudge.naming import opening_watch_workflow_id

TENANT = "bench-bh"
TARGET_S = 60.0
CLOSED = "[closed]"
OPEN = "[open]"
FIRST_NUMBER = 50_000_000
# Where the set-up opens while it runs, when the opening is edited in after it.
SETUP_OPENING = timedelta(hours=6)


def opening_at(after: datetime) -> datetime:
    """The first whole minute (UTC) at or after ``after``."""
    whole = after.replace(second=0, microsecond=0)
    return whole if whole == after else whole + timedelta(minutes=1)


def schedule(opens: datetime) -> dict[str, Any]:
    """A UTC schedule whose next opening is ``opens`` (a whole minute), open from it to the
    end of the next day: closed now whenever ``opens`` is less than six days away, whatever
    midnight lies between."""
    day = opens.weekday()
    week = {
        WEEKDAYS[day]: [f"{opens:%H:%M}-24:00"],
        WEEKDAYS[(day + 1) % 7]: ["00:00-24:00"],
    }
    return {
        "timezone": "UTC",
        "week": week,
        "unavailable_message": {
            "enabled": True,
            "message": {
                "kind": "text",
                "text": CLOSED + " We are closed. Shall we tell you when we open? (yes/no)",
            },
        },
        "notify_when_available": {
            "enabled": True,
            "message": {"kind": "text", "text": OPEN + " We are open again, {{ contact.name }}"},
        },
    }


async def put_schedule(bench: SmsBench, opens: datetime) -> None:
    ok(await bench.api.put("/v1/business-hours/default", json=schedule(opens)))
    status = ok(await bench.api.get("/v1/business-hours/default/status")).json()
    if status["open"]:
        raise RuntimeError(f"the schedule is open now: {status}")


async def add_contacts(bench: SmsBench, count: int, in_flight: int) -> list[tuple[str, str]]:
    """``count`` contacts with phones; (external id, phone) each."""
    contacts = [(f"bh-{i}", phone(FIRST_NUMBER + i)) for i in range(count)]
    limit = asyncio.Semaphore(in_flight)

    async def one(contact: str, number: str) -> None:
        async with limit:
            body = {"name": f"Contact {contact}", "phone": number}
            ok(await sent(bench.api, "PUT", f"/v1/contacts/{contact}", json=body))

    await asyncio.gather(*(one(c, p) for c, p in contacts))
    return contacts


async def write(api: httpx.AsyncClient, contact: str, text: str, channel: str) -> float:
    """One incoming message; the milliseconds its 202 took (429s waited out)."""
    body = {
        "contact_id": contact,
        "direction": "incoming",
        "channel": channel,
        "text": text,
        "message_id": uuid.uuid4().hex,
    }
    started = time.perf_counter()
    while True:
        # A repeat of the same message id is answered `duplicate` and changes nothing.
        answer = await sent(api, "POST", "/v1/events/messages", json=body)
        if answer.status_code != 429:
            break
        await asyncio.sleep(float(answer.headers.get("Retry-After", "1")))
    if ok(answer).json()["status"] not in ("accepted", "duplicate"):
        raise RuntimeError(f"{contact}'s {text!r} was not accepted: {answer.text}")
    return (time.perf_counter() - started) * 1000


async def subscribe_all(
    bench: SmsBench, contacts: list[tuple[str, str]], in_flight: int
) -> dict[str, Any]:
    """Each contact writes, then says yes; the answers' times."""
    limit = asyncio.Semaphore(in_flight)
    hello_ms: list[float] = []
    yes_ms: list[float] = []

    async def one(contact: str) -> None:
        async with limit:
            hello_ms.append(await write(bench.api, contact, "hello", bench.channel))
            yes_ms.append(await write(bench.api, contact, "yes", bench.channel))

    started = time.perf_counter()
    await asyncio.gather(*(one(c) for c, _ in contacts))
    seconds = time.perf_counter() - started
    return {
        "events": len(hello_ms) + len(yes_ms),
        "seconds": round(seconds, 1),
        "per_second": round((len(hello_ms) + len(yes_ms)) / seconds, 1),
        "hello_ms": spread(hello_ms),
        "yes_ms": spread(yes_ms),
    }


async def wait_count(bench: SmsBench, tag: str, count: int, stall_s: float) -> int:
    """Waits until the fake holds ``count`` tagged messages, or none came for ``stall_s``."""
    seen, changed = -1, time.monotonic()
    while True:
        now = bench.fake.count(tag)
        if now >= count:
            return now
        if now != seen:
            seen, changed = now, time.monotonic()
        elif time.monotonic() - changed > stall_s:
            return now
        await asyncio.sleep(0.2)


def closed_message_gaps(bench: SmsBench, ids: list[str]) -> dict[str, Any]:
    """What the stack's database says of the closed messages of these contacts (their
    notification, delivery and outbox entry), and the tenant's notifications and outbox
    entries by state: read-only, from the SQLite file of the data dir."""
    path = bench.data_dir / "nudge.sqlite3"
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
        db.row_factory = sqlite3.Row
        tenant = db.execute("SELECT id FROM tenants WHERE slug = ?", (bench.tenant,)).fetchone()
        found: dict[str, Any] = {
            "notifications_by_status": dict(
                db.execute(
                    "SELECT status, count(*) FROM notifications WHERE tenant_id = ?"
                    " GROUP BY status",
                    (tenant["id"],),
                ).fetchall()
            ),
            "outbox_by_outcome": {
                str(k): v
                for k, v in db.execute(
                    "SELECT coalesce(outcome, 'pending'), count(*) FROM outbox"
                    " WHERE tenant_id = ? GROUP BY outcome",
                    (tenant["id"],),
                ).fetchall()
            },
            "contacts": {},
        }
        for external_id in ids[:10]:
            rows = db.execute(
                "SELECT n.id, n.status AS notification, n.error, n.created_at,"
                " d.status AS delivery, d.tries, d.error AS delivery_error,"
                " o.outcome, o.tries AS relay_tries, o.last_error, o.done_at"
                " FROM contacts c JOIN notifications n ON n.contact_id = c.id"
                " LEFT JOIN deliveries d ON d.id = n.delivery_id"
                " LEFT JOIN outbox o ON o.workflow_id LIKE '%' || n.id"
                " WHERE c.tenant_id = ? AND c.external_id = ?",
                (tenant["id"], external_id),
            ).fetchall()
            found["contacts"][external_id] = [dict(row) for row in rows]
        return found


async def watch_state(client: Client, workflow_id: str) -> dict[str, Any]:
    try:
        described = await client.get_workflow_handle(workflow_id).describe()
    except Exception as exc:  # not started, say
        return {"status": f"{type(exc).__name__}: {exc}"}
    status = described.status.name if described.status is not None else "?"
    return {"status": status, "run_id": described.run_id}


async def watch_activities(client: Client, workflow_id: str, opened: float) -> list[Any]:
    """The watch's activities, in seconds from the opening."""

    def rel(at: float | None) -> float | None:
        return round(at - opened, 2) if at is not None else None

    return [
        {
            "name": span.name,
            "scheduled_s": rel(span.scheduled),
            "started_s": rel(span.started),
            "ended_s": rel(span.ended),
            "completed": span.completed,
        }
        for span in await activity_spans(client, workflow_id)
        if span.scheduled >= opened - 600
    ]


async def main(count: int, in_flight: int, lead: float, open_in: float | None) -> dict[str, Any]:
    report: dict[str, Any] = {"target_s": TARGET_S, "machine_load": load_average()}
    stop_on_signals()
    async with sms_bench(TENANT) as bench:
        client = await Client.connect(bench.stack.temporal_address)
        watch_id = opening_watch_workflow_id(bench.tenant, "default")
        started = time.perf_counter()
        now = datetime.now(UTC)
        opens = opening_at(now + (timedelta(seconds=open_in) if open_in else SETUP_OPENING))
        await put_schedule(bench, opens)
        setup: dict[str, Any] = {"load_before": load_average()}
        contacts = await add_contacts(bench, count, in_flight)
        setup["contacts_s"] = round(time.perf_counter() - started, 1)
        print(json.dumps({"contacts": count, "seconds": setup["contacts_s"]}), flush=True)
        setup["events"] = await subscribe_all(bench, contacts, in_flight)
        print(json.dumps({"events": setup["events"]}), flush=True)
        closed = await wait_count(bench, CLOSED, count, stall_s=180)
        setup["closed_messages"] = closed
        setup["all_closed_messages_s"] = round(time.perf_counter() - started, 1)
        setup["watch"] = await watch_state(client, watch_id)
        setup["load_after"] = load_average()
        report["setup"] = setup
        print(json.dumps({"setup": setup}), flush=True)
        if open_in is None:
            opens = opening_at(datetime.now(UTC) + timedelta(seconds=lead))
            await put_schedule(bench, opens)
        elif datetime.now(UTC) >= opens:
            raise RuntimeError(f"the set-up ended after the opening at {opens}: raise --open-in")
        report["opening"] = opens.isoformat()
        opened = opens.timestamp()
        await asyncio.sleep(max(0.0, opened - time.time() - 5))
        meter = CpuMeter(bench.stack)
        load_at_opening = load_average()
        meter.start()
        await asyncio.sleep(max(0.0, opened - time.time()))
        told = await wait_count(bench, OPEN, count, stall_s=180)
        cpu = meter.stop()
        load_after = load_average()
        await asyncio.sleep(3)  # a late repeat would show here
        arrivals = bench.fake.arrivals(OPEN)
        closed_arrivals = bench.fake.arrivals(CLOSED)
        per_phone = Counter(a.to for a in arrivals)
        closed_per_phone = Counter(a.to for a in closed_arrivals)
        phones = {number for _, number in contacts}
        walls = sorted(a.wall for a in arrivals)
        report["opening_run"] = {
            "told": told,
            "arrivals": len(arrivals),
            "before_the_opening": sum(1 for w in walls if w < opened),
            "first_after_opening_s": round(walls[0] - opened, 2) if walls else None,
            "last_after_opening_s": round(walls[-1] - opened, 2) if walls else None,
            "per_second": round((len(walls) - 1) / (walls[-1] - walls[0]), 1)
            if len(walls) > 1
            else None,
            "within_target": sum(1 for w in walls if w - opened <= TARGET_S),
            "contacts_told_once": sum(1 for p in phones if per_phone[p] == 1),
            "contacts_told_twice_or_more": sum(1 for p in phones if per_phone[p] > 1),
            "contacts_never_told": sum(1 for p in phones if per_phone[p] == 0),
            "contacts_with_one_closed_message": sum(1 for p in phones if closed_per_phone[p] == 1),
            "cpu": cpu,
            "load": {"at_opening": load_at_opening, "after": load_after},
            "worker_vmhwm_mb": peak_mb(bench.pids()["worker"]),
        }
        odd = [(c, number) for c, number in contacts if closed_per_phone[number] != 1]
        if odd:
            report["closed_message_gaps"] = {
                "contacts": len(odd),
                "by_count": dict(Counter(closed_per_phone[number] for _, number in odd)),
            }
            try:
                report["closed_message_gaps"].update(
                    closed_message_gaps(bench, [c for c, _ in odd])
                )
            except sqlite3.Error as exc:  # a diagnostic: never the end of the report
                report["closed_message_gaps"]["error"] = repr(exc)
        report["watch"] = {
            "after": await watch_state(client, watch_id),
            "activities": await watch_activities(client, watch_id, opened),
        }
        report["total_s"] = round(time.perf_counter() - started, 1)
        return report


def verdict(report: dict[str, Any], count: int) -> tuple[bool, str]:
    run = report["opening_run"]
    last = run["last_after_opening_s"]
    passed = (
        run["contacts_told_once"] == count
        and run["before_the_opening"] == 0
        and last is not None
        and last <= TARGET_S
    )
    setup = report["setup"]
    line = (
        f"{'PASS' if passed else 'MISS'} business_hours: {run['contacts_told_once']}/{count}"
        f" contacts told once ({run['contacts_told_twice_or_more']} more than once,"
        f" {run['contacts_never_told']} never), first {run['first_after_opening_s']} s / last"
        f" {last} s after the opening (target <= {TARGET_S:g} s), {run['per_second']}/s;"
        f" set-up {setup['all_closed_messages_s']} s ({setup['events']['events']} events at"
        f" {setup['events']['per_second']}/s); {cpu_note(run['cpu'])}; load at the opening"
        f" {run['load']['at_opening']}, after {run['load']['after']}"
    )
    return passed, line


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--lead", type=float, default=90, help="seconds from set-up to opening")
    parser.add_argument("--open-in", type=float, help="open this long after the start, no edit")
    parser.add_argument("--strict", action="store_true", help="exit 1 on a MISS")
    args = parser.parse_args()
    result = asyncio.run(main(args.contacts, args.in_flight, args.lead, args.open_in))
    print(json.dumps(result, indent=2))
    passed, line = verdict(result, args.contacts)
    print(line, flush=True)
    sys.exit(1 if args.strict and not passed else 0)
