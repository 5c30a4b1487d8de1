"""Campaign benchmark on a `nudge dev` stack (see the README, "Benchmarks").

A tenant of its own with an SMS channel on a fake Twilio (no receipts) that notes when each
message reached it. Four parts, each with its target; they share one stack and run in this
order (distinct phone ranges, each campaign's texts tagged):

- upload: a CSV of ``--rows`` (100 000) rows ``phone;name;due`` through `POST /v1/campaigns`,
  scheduled for 2099 (nothing sends), then cancelled. Figures: the request's wall time and
  the API process's peak RSS while it ran (VmRSS read from /proc every 20 ms; its VmHWM
  beside it). Targets: under 20 s, under 300 MB.
- throughput: ``--rows`` (10 000) recipients `all_at_once`, sends a second from the first to
  the last arrival at the fake, beside a "bare" baseline on the same server: ``--bare``
  (2 000) `POST /v1/notifications` to the same contacts, one workflow per message, sends a
  second measured the same way. Targets: at least 10x the baseline, the worker's peak RSS
  (VmHWM) under 400 MB.
- rate: ``--rows`` (6 000) rows at `rate` ``--per-second`` (50) with ``--workers`` (2)
  `nudge worker` processes on the stack's task queue (the stack's own and one started here,
  without `/metrics`). Figure: arrivals in each 10-second window from the first arrival;
  target: every full window after the first within ±5 % of the rate.
- pause: a `rate` campaign of ``--rows`` (4 000) rows on the same workers; ``--cycles`` (20)
  times: 2 s of sending, `POST …/pause`, 3 s paused, `POST …/resume`. Figure: for each
  pause, from its 200 answer to the last send of the campaign that reached the fake after
  it (0 when none did; sends claimed before the answer may still arrive); target p99 < 1 s.

One PASS/MISS line per part at the end; ``--strict`` exits 1 on a MISS.

    .venv/bin/python -m bench.campaigns [--part upload|throughput|rate|pause ...] [--rows N]
        [--bare 2000] [--per-second 50] [--workers 2] [--cycles 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import sys
import time
from collections import Counter
from typing import Any

from temporalio.client import Client

from bench.campaign_setup import (
    RssSampler,
    SmsArrival,
    SmsBench,
    activity_spans,
    campaign_csv,
    campaign_spec,
    create_campaign,
    extra_workers,
    peak_mb,
    phone,
    post_campaign,
    sms_bench,
    status_kb,
    stop_on_signals,
)
from bench.channel_setup import CpuMeter, load_average, spread
from bench.common import ok, percentile
from nudge.api.body_limit import MAX_UPLOAD_BYTES
from nudge.naming import campaign_workflow_id

TENANT = "bench-cmp"
PARTS = ("upload", "throughput", "rate", "pause")
DEFAULT_ROWS = {"upload": 100_000, "throughput": 10_000, "rate": 6_000, "pause": 4_000}
# Each part's phones, apart from the others' (+34 6 and eight digits).
FIRST_NUMBER = {"upload": 0, "throughput": 20_000_000, "rate": 30_000_000, "pause": 40_000_000}
TAGS = {"upload": "[upload]", "throughput": "[thru]", "bare": "[bare]", "rate": "[rate]"}
TAGS["pause"] = "[pause]"
TARGETS = {
    "upload_s": 20.0,
    "upload_api_mb": 300.0,
    "throughput_ratio_min": 10.0,
    "worker_mb": 400.0,
    "rate_tolerance": 0.05,
    "pause_p99_s": 1.0,
}
FAR_START = {"at": "2099-01-01T09:00:00", "timezone": "UTC"}
WINDOW_S = 10.0
BARE_IN_FLIGHT = 32
PAUSE_RUN_S, PAUSE_SETTLE_S = 2.0, 3.0


# --- waiting for the fake -------------------------------------------------------------------


async def arrivals_of(
    bench: SmsBench, tag: str, count: int, stall_s: float = 120
) -> list[SmsArrival]:
    """The tagged arrivals once there are ``count``, or once none came for ``stall_s``."""
    seen, last_change = -1, time.monotonic()
    while True:
        now = bench.fake.count(tag)
        if now >= count:
            return bench.fake.arrivals(tag)
        if now != seen:
            seen, last_change = now, time.monotonic()
        elif time.monotonic() - last_change > stall_s:
            return bench.fake.arrivals(tag)
        await asyncio.sleep(0.2)


def per_second(arrivals: list[SmsArrival]) -> float:
    """Sends a second from the first arrival to the last."""
    if len(arrivals) < 2:
        return float("nan")
    return (len(arrivals) - 1) / (arrivals[-1].at - arrivals[0].at)


def duplicates(arrivals: list[SmsArrival]) -> int:
    """Messages beyond the first to the same phone."""
    return sum(n - 1 for n in Counter(a.to for a in arrivals).values() if n > 1)


async def campaign_state(bench: SmsBench, campaign_id: str) -> dict[str, Any]:
    found: dict[str, Any] = ok(await bench.api.get(f"/v1/campaigns/{campaign_id}")).json()
    return found


async def settled(bench: SmsBench, campaign_id: str, timeout: float = 60) -> dict[str, Any]:
    """The campaign once it has ended (or after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        state = await campaign_state(bench, campaign_id)
        if state["status"] in ("completed", "cancelled") or time.monotonic() > deadline:
            return state
        await asyncio.sleep(0.5)


async def batches(
    bench: SmsBench, campaign_id: str, names: dict[int, str] | None = None
) -> dict[str, Any]:
    """The campaign run's send batches from its history: how many each worker ran (by
    ``names`` of their pids), their durations, and the gaps from one batch's end to the next
    one's start."""
    names = {bench.pids()["worker"]: "stack worker", **(names or {})}

    def worker(identity: str | None) -> str:
        pid = (identity or "?").partition("@")[0]
        return names.get(int(pid), identity or "?") if pid.isdigit() else (identity or "?")

    client = await Client.connect(bench.stack.temporal_address)
    spans = [
        s
        for s in await activity_spans(client, campaign_workflow_id(bench.tenant, campaign_id))
        if s.name == "send_campaign_batch"
    ]
    durations = [s.ended - s.started for s in spans if s.started and s.ended]
    gaps = [
        later.started - earlier.ended
        for earlier, later in itertools.pairwise(spans)
        if earlier.ended and later.started
    ]
    return {
        "batches": len(spans),
        "by_worker": dict(Counter(worker(s.worker) for s in spans)),
        "batch_s": spread(durations) if durations else None,
        "gap_between_batches_ms": spread([g * 1000 for g in gaps]) if gaps else None,
    }


# --- the parts ------------------------------------------------------------------------------


async def upload(bench: SmsBench, rows: int) -> dict[str, Any]:
    csv = campaign_csv(rows, FIRST_NUMBER["upload"])
    spec = campaign_spec(f"bench upload {rows}", TAGS["upload"], {"type": "all_at_once"})
    spec["start"] = FAR_START
    api_pid = bench.pids()["api"]
    before_kb = status_kb(api_pid, "VmRSS") or 0
    meter = CpuMeter(bench.stack)
    meter.start()
    load_before = load_average()
    with RssSampler(api_pid) as rss:
        started = time.perf_counter()
        answer = await post_campaign(bench.api, csv, spec)
        seconds = time.perf_counter() - started
    report: dict[str, Any] = {
        "rows": rows,
        "csv_mb": round(len(csv) / 1e6, 2),
        "status": answer.status_code,
        "seconds": round(seconds, 2),
        "api_rss_before_mb": round(before_kb / 1024, 1),
        "api_peak_rss_mb": rss.peak_mb,
        "api_rss_samples": rss.samples,
        "api_vmhwm_mb": peak_mb(api_pid),
        "upload_limit_bytes": MAX_UPLOAD_BYTES,
    }
    if answer.status_code == 201:
        created = answer.json()
        report["stored_rows"] = created["progress"]["total"]
        cancel_started = time.perf_counter()
        ok(await bench.api.post(f"/v1/campaigns/{created['id']}/cancel"))
        report["cancel_s"] = round(time.perf_counter() - cancel_started, 2)
    else:
        report["answer"] = answer.text[:300]
    report["cpu"] = meter.stop()
    report["load"] = {"before": load_before, "after": load_average()}
    return report


async def bare_notifications(bench: SmsBench, count: int, contacts: int) -> dict[str, Any]:
    """``count`` notifications, one workflow each, to the throughput campaign's contacts
    (their external id is their phone), posted ``BARE_IN_FLIGHT`` at a time."""
    tag = TAGS["bare"]
    limit = asyncio.Semaphore(BARE_IN_FLIGHT)

    async def one(i: int) -> None:
        body = {
            "contact_id": phone(FIRST_NUMBER["throughput"] + i % contacts),
            "channel": bench.channel,
            "message": {"kind": "text", "text": f"{tag} Hi {{{{ contact.name }}}}, {i}"},
        }
        async with limit:
            ok(await bench.api.post("/v1/notifications", json=body))

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    posted_s = time.perf_counter() - started
    arrivals = await arrivals_of(bench, tag, count)
    return {
        "notifications": count,
        "posted_s": round(posted_s, 1),
        "arrived": len(arrivals),
        "first_to_last_s": round(arrivals[-1].at - arrivals[0].at, 1) if arrivals else None,
        "per_second": round(per_second(arrivals), 1),
        "from_first_post_s": round(arrivals[-1].at - started, 1) if arrivals else None,
    }


async def throughput(bench: SmsBench, rows: int, bare: int) -> dict[str, Any]:
    tag = TAGS["throughput"]
    csv = campaign_csv(rows, FIRST_NUMBER["throughput"])
    spec = campaign_spec(f"bench throughput {rows}", tag, {"type": "all_at_once"})
    meter = CpuMeter(bench.stack)
    load_before = load_average()
    meter.start()
    started = time.perf_counter()
    campaign_id = await create_campaign(bench.api, csv, spec)
    created_s = time.perf_counter() - started
    arrivals = await arrivals_of(bench, tag, rows)
    cpu = meter.stop()
    load_after = load_average()
    state = await settled(bench, campaign_id)
    report: dict[str, Any] = {
        "rows": rows,
        "upload_s": round(created_s, 1),
        "arrived": len(arrivals),
        "duplicates": duplicates(arrivals),
        "first_arrival_after_upload_s": round(arrivals[0].at - started - created_s, 2)
        if arrivals
        else None,
        "first_to_last_s": round(arrivals[-1].at - arrivals[0].at, 1) if arrivals else None,
        "per_second": round(per_second(arrivals), 1),
        "campaign": {"status": state["status"], "progress": state["progress"]},
        "worker_vmhwm_mb": peak_mb(bench.pids()["worker"]),
        "cpu": cpu,
        "load": {"before": load_before, "after": load_after},
    }
    report["run"] = await batches(bench, campaign_id)
    print(json.dumps({"throughput (campaign)": report}), flush=True)
    await asyncio.sleep(2)
    bare_load = load_average()
    bare_meter = CpuMeter(bench.stack)
    bare_meter.start()
    report["bare"] = await bare_notifications(bench, bare, rows)
    report["bare"]["cpu"] = bare_meter.stop()
    report["bare"]["load"] = {"before": bare_load, "after": load_average()}
    report["ratio"] = round(report["per_second"] / report["bare"]["per_second"], 2)
    report["worker_vmhwm_mb_after_bare"] = peak_mb(bench.pids()["worker"])
    return report


def windows(arrivals: list[SmsArrival], width: float = WINDOW_S) -> list[float]:
    """Sends a second in each full window of ``width`` seconds from the first arrival."""
    if not arrivals:
        return []
    origin = arrivals[0].at
    full = int((arrivals[-1].at - origin) // width)
    counts = [0] * full
    for arrival in arrivals:
        index = int((arrival.at - origin) // width)
        if index < full:
            counts[index] += 1
    return [count / width for count in counts]


async def rate(
    bench: SmsBench, rows: int, pace: float, meter: CpuMeter, names: dict[int, str]
) -> dict[str, Any]:
    tag = TAGS["rate"]
    csv = campaign_csv(rows, FIRST_NUMBER["rate"])
    spec = campaign_spec(f"bench rate {rows}", tag, {"type": "rate", "per_second": pace})
    load_before = load_average()
    meter.start()
    campaign_id = await create_campaign(bench.api, csv, spec)
    arrivals = await arrivals_of(bench, tag, rows, stall_s=60)
    cpu = meter.stop()
    load_after = load_average()
    state = await settled(bench, campaign_id)
    rates = windows(arrivals)
    low, high = pace * (1 - TARGETS["rate_tolerance"]), pace * (1 + TARGETS["rate_tolerance"])
    checked = rates[1:]
    return {
        "rows": rows,
        "per_second_asked": pace,
        "arrived": len(arrivals),
        "duplicates": duplicates(arrivals),
        "per_second": round(per_second(arrivals), 2),
        "windows_per_second": [round(r, 1) for r in rates],
        "windows_checked": len(checked),
        "windows_out_of_band": [
            {"window": i + 1, "per_second": round(r, 1)}
            for i, r in enumerate(checked)
            if not low <= r <= high
        ],
        "band": [round(low, 2), round(high, 2)],
        "campaign": {"status": state["status"], "progress": state["progress"]},
        "run": await batches(bench, campaign_id, names),
        "cpu": cpu,
        "load": {"before": load_before, "after": load_after},
    }


async def pause(
    bench: SmsBench, rows: int, pace: float, cycles: int, meter: CpuMeter, names: dict[int, str]
) -> dict[str, Any]:
    tag = TAGS["pause"]
    csv = campaign_csv(rows, FIRST_NUMBER["pause"])
    spec = campaign_spec(f"bench pause {rows}", tag, {"type": "rate", "per_second": pace})
    load_before = load_average()
    meter.start()
    campaign_id = await create_campaign(bench.api, csv, spec)
    path = f"/v1/campaigns/{campaign_id}"
    await arrivals_of(bench, tag, 1, stall_s=60)
    pauses: list[dict[str, Any]] = []
    for _ in range(cycles):
        await asyncio.sleep(PAUSE_RUN_S)
        asked = time.perf_counter()
        answer = await bench.api.post(f"{path}/pause")
        answered = time.perf_counter()
        if answer.status_code == 409:  # every row sent already
            break
        ok(answer)
        await asyncio.sleep(PAUSE_SETTLE_S)
        sent = bench.fake.arrivals(tag)
        after = [a for a in sent if a.at > answered]
        pauses.append(
            {
                "answer_ms": round((answered - asked) * 1000, 1),
                "in_flight_while_asking": sum(1 for a in sent if asked < a.at <= answered),
                "after_answer": len(after),
                "last_after_answer_s": round(after[-1].at - answered, 3) if after else 0.0,
            }
        )
        resumed = time.perf_counter()
        ok(await bench.api.post(f"{path}/resume"))
        resumed_sends = await arrivals_of(bench, tag, len(sent) + 1, stall_s=30)
        first_again = (
            resumed_sends[len(sent)].at if len(resumed_sends) > len(sent) else float("nan")
        )
        pauses[-1]["resume_to_first_send_s"] = round(first_again - resumed, 3)
    cpu = meter.stop()
    load_after = load_average()
    with contextlib.suppress(Exception):
        ok(await bench.api.post(f"{path}/cancel"))
    late = [p["last_after_answer_s"] for p in pauses]
    return {
        "rows": rows,
        "per_second_asked": pace,
        "cycles": len(pauses),
        "late_s": {
            "p50": percentile(late, 50) if late else None,
            "p99": percentile(late, 99) if late else None,
            "max": max(late) if late else None,
        },
        "sends_after_answer": sum(p["after_answer"] for p in pauses),
        "answer_ms": spread([p["answer_ms"] for p in pauses]),
        "resume_to_first_send_s": spread([p["resume_to_first_send_s"] for p in pauses]),
        "pauses": pauses,
        "run": await batches(bench, campaign_id, names),
        "cpu": cpu,
        "load": {"before": load_before, "after": load_average(), "at_end": load_after},
    }


# --- verdicts -------------------------------------------------------------------------------


def verdicts(report: dict[str, Any]) -> list[tuple[bool, str]]:
    lines: list[tuple[bool, str]] = []
    if "upload" in report:
        up = report["upload"]
        passed = (
            up["status"] == 201
            and up["seconds"] < TARGETS["upload_s"]
            and up["api_peak_rss_mb"] < TARGETS["upload_api_mb"]
        )
        why = "" if up["status"] == 201 else f" ({up.get('answer', '')[:80]})"
        lines.append(
            (
                passed,
                f"upload: {up['rows']} rows ({up['csv_mb']} MB) answered {up['status']}{why}"
                f" in {up['seconds']} s (target < {TARGETS['upload_s']:g} s), API peak RSS"
                f" {up['api_peak_rss_mb']} MB (VmHWM {up['api_vmhwm_mb']}; target <"
                f" {TARGETS['upload_api_mb']:g}); load {up['load']['after']}",
            )
        )
    if "throughput" in report:
        th = report["throughput"]
        bare = th["bare"]
        passed = (
            th["arrived"] == th["rows"]
            and th["duplicates"] == 0
            and th["ratio"] >= TARGETS["throughput_ratio_min"]
            and th["worker_vmhwm_mb"] < TARGETS["worker_mb"]
        )
        lines.append(
            (
                passed,
                f"throughput: {th['arrived']}/{th['rows']} all_at_once at {th['per_second']}/s"
                f" vs bare {bare['arrived']}/{bare['notifications']} notifications at"
                f" {bare['per_second']}/s: {th['ratio']}x (target >="
                f" {TARGETS['throughput_ratio_min']:g}x), worker VmHWM"
                f" {th['worker_vmhwm_mb']} MB (target < {TARGETS['worker_mb']:g}); load"
                f" {th['load']['after']} / {bare['load']['after']}",
            )
        )
    if "rate" in report:
        ra = report["rate"]
        passed = (
            ra["arrived"] == ra["rows"]
            and ra["windows_checked"] > 0
            and not ra["windows_out_of_band"]
        )
        checked = ra["windows_per_second"][1:]
        lines.append(
            (
                passed,
                f"rate: {ra['arrived']}/{ra['rows']} at {ra['per_second']}/s (asked"
                f" {ra['per_second_asked']:g}) on {report.get('workers', 1)} workers; 10-s"
                f" windows after the first {min(checked, default=float('nan'))} to"
                f" {max(checked, default=float('nan'))}/s, {len(ra['windows_out_of_band'])}"
                f" of {ra['windows_checked']} outside {ra['band'][0]} to {ra['band'][1]};"
                f" batches by worker {ra['run']['by_worker']}; load {ra['load']['after']}",
            )
        )
    if "pause" in report:
        pa = report["pause"]
        p99 = pa["late_s"]["p99"]
        passed = p99 is not None and p99 < TARGETS["pause_p99_s"] and pa["cycles"] > 0
        lines.append(
            (
                passed,
                f"pause: {pa['cycles']} pauses at {pa['per_second_asked']:g}/s, answer → last"
                f" send at the fake p50 {pa['late_s']['p50']} / p99 {p99} / max"
                f" {pa['late_s']['max']} s (target p99 < {TARGETS['pause_p99_s']:g} s),"
                f" {pa['sends_after_answer']} sends after an answer; load"
                f" {pa['load']['after']}",
            )
        )
    return lines


# --- main -----------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> dict[str, Any]:
    parts = [p for p in PARTS if p in (args.part or PARTS)]
    rows = {p: args.rows or DEFAULT_ROWS[p] for p in parts}
    report: dict[str, Any] = {"targets": TARGETS, "parts": parts, "machine_load": load_average()}
    stop_on_signals()
    async with sms_bench(TENANT) as bench:
        if "upload" in parts:
            report["upload"] = await upload(bench, rows["upload"])
            print(json.dumps({"upload": report["upload"]}), flush=True)
        if "throughput" in parts:
            report["throughput"] = await throughput(bench, rows["throughput"], args.bare)
            print(json.dumps({"throughput": report["throughput"]}), flush=True)
        if "rate" in parts or "pause" in parts:
            report["workers"] = args.workers
            with extra_workers(bench, args.workers - 1) as extra:
                names = {w.pid: f"extra worker {i + 1}" for i, w in enumerate(extra)}
                meter = CpuMeter(bench.stack)
                meter.pids.update({name: pid for pid, name in names.items()})
                if "rate" in parts:
                    report["rate"] = await rate(bench, rows["rate"], args.per_second, meter, names)
                    print(json.dumps({"rate": report["rate"]}), flush=True)
                if "pause" in parts:
                    report["pause"] = await pause(
                        bench, rows["pause"], args.per_second, args.cycles, meter, names
                    )
                    print(json.dumps({"pause": report["pause"]}), flush=True)
                report["extra_worker_vmhwm_mb"] = [peak_mb(w.pid) for w in extra]
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", action="append", choices=PARTS, help="repeat; default all")
    parser.add_argument("--rows", type=int, help=f"rows of each part run (default {DEFAULT_ROWS})")
    parser.add_argument("--bare", type=int, default=2000, help="bare notifications")
    parser.add_argument("--per-second", type=float, default=50)
    parser.add_argument("--workers", type=int, default=2, help="workers for rate and pause")
    parser.add_argument("--cycles", type=int, default=20, help="pause/resume cycles")
    parser.add_argument("--strict", action="store_true", help="exit 1 on a MISS")
    arguments = parser.parse_args()
    result = asyncio.run(main(arguments))
    print(json.dumps(result, indent=2))
    lines = verdicts(result)
    for passed, line in lines:
        print(f"{'PASS' if passed else 'MISS'} campaigns {line}", flush=True)
    sys.exit(1 if arguments.strict and not all(p for p, _ in lines) else 0)
