"""WhatsApp receipts benchmark on a `nudge dev` stack (see the README, "Benchmarks").

A tenant of its own with a WhatsApp channel on a fake Cloud API that posts no receipts of
its own; N deliveries sent for real (notifications through the API, spread over C contacts
whose 24-hour window is open). Then a `delivered` and a `read` status callback for each
delivery, signed as Meta signs them and shuffled a little (some `read`s come before their
`delivered`), are posted to `POST /v1/webhooks/{tenant}/{channel}` at a steady pace (2 000
a minute by default: 1 000 deliveries take a minute) from an async client that does not wait
for one answer before the next post. Figures: each callback's answer time (p50/p95/p99/max)
and, at the end, every delivery's state through `GET /v1/deliveries`.

Target: p99 answer under 100 ms, every delivery `read`. The last line is the verdict;
``--strict`` exits 1 on a MISS.

    .venv/bin/python -m bench.channel_receipts [--deliveries 1000] [--contacts 100]
        [--per-minute 2000] [--strict]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter
from typing import Any

from bench.channel_setup import (
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
    status_value,
)
from bench.common import ok

TARGET_P99_MS = 100.0
SEND_LIMIT = asyncio.Semaphore(16)
SHUFFLE = 3.0  # a callback may overtake up to about this many posted before it


async def notify(bench: ChannelBench, contact: str, i: int) -> str:
    """One notification through the API (its rate limit's 429s waited out); its id."""
    body = {
        "contact_id": contact,
        "channel": bench.channel,
        "message": {"kind": "text", "text": f"Your order {i} has shipped"},
    }
    async with SEND_LIMIT:
        while True:
            answer = await bench.api.post("/v1/notifications", json=body)
            if answer.status_code != 429:
                notification_id: str = ok(answer).json()["id"]
                return notification_id
            await asyncio.sleep(float(answer.headers.get("Retry-After", "1")))


async def all_deliveries(bench: ChannelBench) -> list[dict[str, Any]]:
    """Every delivery of the tenant, through `GET /v1/deliveries`'s pages."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = ok(await bench.api.get("/v1/deliveries", params=params)).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items


async def sent_deliveries(bench: ChannelBench, contacts: int, count: int) -> dict[str, Any]:
    """``count`` deliveries in state `sent`, spread over ``contacts`` contacts."""
    people = await add_contacts(bench.api, contacts, "rcpt")
    await open_windows(bench, people)
    started = time.perf_counter()
    await asyncio.gather(*(notify(bench, people[i % contacts].id, i) for i in range(count)))
    queued_s = time.perf_counter() - started
    deadline = time.monotonic() + max(300.0, count * 0.5)
    while True:
        deliveries = await all_deliveries(bench)
        sent = [d for d in deliveries if d["status"] == "sent" and d["provider_message_id"]]
        if len(sent) >= count:
            break
        if time.monotonic() > deadline:
            states = Counter(d["status"] for d in deliveries)
            raise TimeoutError(f"{len(sent)} of {count} deliveries sent: {dict(states)}")
        await asyncio.sleep(1)
    return {
        "deliveries": len(sent),
        "contacts": contacts,
        "queued_s": round(queued_s, 1),
        "all_sent_s": round(time.perf_counter() - started, 1),
    }


def callbacks(bench: ChannelBench, seed: int) -> tuple[list[dict[str, Any]], int]:
    """`delivered` then `read` for every message the fake accepted, shuffled a little; the
    callbacks and how many deliveries get their `read` first."""
    ordered = [
        status_value(m.wamid, status, m.to)
        for m in bench.fake.sent
        for status in ("delivered", "read")
    ]
    shuffle = random.Random(seed)
    keyed = sorted(
        ((i + shuffle.uniform(0, SHUFFLE), value) for i, value in enumerate(ordered)),
        key=lambda pair: pair[0],
    )
    values = [value for _, value in keyed]
    first: dict[str, str] = {}
    for value in values:
        (entry,) = value["statuses"]
        first.setdefault(entry["id"], entry["status"])
    return values, sum(1 for status in first.values() if status == "read")


async def final_states(bench: ChannelBench, count: int, wait_s: float = 15) -> dict[str, Any]:
    """The deliveries' states once all are `read`, or after ``wait_s`` seconds."""
    started = time.perf_counter()
    while True:
        deliveries = await all_deliveries(bench)
        states = Counter(d["status"] for d in deliveries)
        complete = [
            d for d in deliveries if d["status"] == "read" and d["delivered_at"] and d["read_at"]
        ]
        if len(complete) >= count or time.perf_counter() - started > wait_s:
            return {
                "read": len(complete),
                "states": dict(states),
                "checked_after_s": round(time.perf_counter() - started, 1),
            }
        await asyncio.sleep(1)


async def main(deliveries: int, contacts: int, per_minute: float, seed: int) -> dict[str, Any]:
    async with channel_bench() as bench:
        report: dict[str, Any] = {"target_p99_ms": TARGET_P99_MS}
        report["setup"] = await sent_deliveries(bench, min(contacts, deliveries), deliveries)
        print(json.dumps({"setup": report["setup"]}), flush=True)
        values, read_first = callbacks(bench, seed)
        await asyncio.sleep(2)  # let the sends' last bookkeeping settle
        meter = CpuMeter(bench.stack)
        load_before = load_average()
        meter.start()
        started = time.perf_counter()

        async def post(value: dict[str, Any], late_ms: float) -> Posted:
            return await bench.poster.post(value, late_ms)

        posted = await paced(values, per_minute / 60, post)
        elapsed = time.perf_counter() - started
        report["cpu"] = meter.stop()
        errors = [p.error for p in posted if p.error]
        report["callbacks"] = {
            "posted": len(posted),
            "read_before_delivered": read_first,
            "seconds": round(elapsed, 1),
            "per_second": round(len(posted) / elapsed, 1),
            "answer_ms": spread([p.ms for p in posted]),
            "late_ms": spread([p.late_ms for p in posted]),
            "errors": len(errors),
            "first_errors": errors[:3],
        }
        report["load"] = {"before": load_before, "after": load_average()}
        report["final"] = await final_states(bench, deliveries)
        return report


def verdict(report: dict[str, Any]) -> tuple[bool, str]:
    calls, final = report["callbacks"], report["final"]
    answer = calls["answer_ms"]
    expected = report["setup"]["deliveries"]
    passed = answer["p99"] < TARGET_P99_MS and calls["errors"] == 0 and final["read"] == expected
    line = (
        f"{'PASS' if passed else 'MISS'} channel_receipts: {calls['posted']} callbacks in"
        f" {calls['seconds']} s ({calls['per_second']}/s), answer p50 {answer['p50']} / p95"
        f" {answer['p95']} / p99 {answer['p99']} / max {answer['max']} ms (target p99 <"
        f" {TARGET_P99_MS:g}), {calls['errors']} errors, {final['read']}/{expected}"
        f" deliveries read; {cpu_note(report['cpu'])}, load {report['load']['after']}"
    )
    return passed, line


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deliveries", type=int, default=1000)
    parser.add_argument("--contacts", type=int, default=100)
    parser.add_argument("--per-minute", type=float, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--strict", action="store_true", help="exit 1 on a MISS")
    args = parser.parse_args()
    result = asyncio.run(main(args.deliveries, args.contacts, args.per_minute, args.seed))
    print(json.dumps(result, indent=2))
    passed, line = verdict(result)
    print(line, flush=True)
    sys.exit(1 if args.strict and not passed else 0)
