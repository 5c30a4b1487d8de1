"""Drill: Temporal unreachable for 30 s while 1 000 events are posted with client retries;
0 events lost, 0 handled twice.

The API and both workers reach the Temporal frontend through a TCP proxy of the drill's own
(bench/drills/harness.py, TcpProxy); cutting it closes the listener (connections are refused)
and resets every open connection, for `--outage` seconds.

N contacts are enrolled in a journey built so that each event's fate shows in the database:

    ask1 (a question; its reply is stored as variable `a1`) → ask2 (another question) → end
    exit condition: incoming_message

An event (one incoming message per contact, its own `message_id`, text `answer-<i>`) handled
once is the reply to ask1: the enrollment stores `a1` and waits at ask2. Lost: it still waits
at ask1. Handled twice: the second copy either answers ask2 (the enrollment completes) or
arrives while nothing is asked and ends it by the exit condition; either way it is no longer
active. The receiver's side shows the same: ask2's question is sent once per handled event.

Events are posted at `--rate` per second; the proxy is cut `--cut-at` seconds after the
first. Each event is retried by the client (same body, same message_id) on a connection
error, a timeout, a 429 or a 5xx, with backoff up to 4 s, until answered 202.

    .venv/bin/python -m bench.drills.temporal_outage                      # 1 000 events
    .venv/bin/python -m bench.drills.temporal_outage --events 100 --outage 10
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.drills.harness import (
    Cluster,
    ClusterOptions,
    DrillError,
    Report,
    TimedReceiver,
    api_client,
    by_key,
    common_arguments,
    contacts,
    enroll,
    logical_id,
    published_journey,
    run_drill,
    say,
    settle,
    wait_for,
    webhook_channel,
)


def journey() -> dict[str, Any]:
    def ask(step: str, variable: str) -> dict[str, Any]:
        return {
            "id": step,
            "type": "ask",
            "channel": "hook",
            "message": {"kind": "text", "text": f"question {step}"},
            "variable": variable,
            "timeout_minutes": 525600,
        }

    return {
        "name": "drill: two questions",
        "trigger": {"type": "api"},
        "settings": {"exit_conditions": ["incoming_message"]},
        "steps": [ask("ask1", "a1"), ask("ask2", "a2"), {"id": "done", "type": "end"}],
    }


IN_FLIGHT: list[asyncio.Semaphore] = []


@dataclass
class Posted:
    index: int
    tries: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    status: str | None = None  # accepted | duplicate (the 202's), None: never answered 202
    accepted_at: float | None = None
    error: str | None = None


async def post_event(
    api: httpx.AsyncClient, index: int, contact: str, at: float, args: argparse.Namespace
) -> Posted:
    await asyncio.sleep(max(0.0, at - time.time()))
    timeout = httpx.Timeout(args.timeout, pool=None)
    body = {
        "contact_id": contact,
        "direction": "incoming",
        "channel": "hook",
        "text": f"answer-{index}",
        "message_id": f"drill-event-{index}",
    }
    posted = Posted(index)
    delay = 0.5
    give_up = time.time() + args.retry_for
    while True:
        posted.tries += 1
        try:
            # At most `--clients` requests in flight; waiting for a turn is not a try's time.
            async with IN_FLIGHT[0]:
                response = await api.post("/v1/events/messages", json=body, timeout=timeout)
        except httpx.HTTPError as exc:
            posted.answers[type(exc).__name__] += 1
        else:
            posted.answers[str(response.status_code)] += 1
            if response.status_code == 202:
                posted.status = response.json().get("status")
                posted.accepted_at = time.time()
                return posted
            if 400 <= response.status_code < 500 and response.status_code != 429:
                posted.error = f"{response.status_code} {response.text[:200]}"
                return posted
        if time.time() + delay > give_up:
            posted.error = "gave up"
            return posted
        await asyncio.sleep(delay)
        delay = min(delay * 2, 4.0)


async def drill(cluster: Cluster, report: Report, args: argparse.Namespace) -> None:
    assert cluster.proxy is not None
    IN_FLIGHT[:] = [asyncio.Semaphore(args.clients)]
    people = [f"e{i:05d}" for i in range(args.events)]
    with TimedReceiver() as hook:
        async with api_client(cluster, timeout=args.timeout) as api:
            await webhook_channel(api, "hook", hook)
            await contacts(api, people)
            journey_id = await published_journey(api, journey())
            setup_started = time.time()
            await enroll(api, journey_id, people)

            def asked(step: str) -> set[str]:
                prefix = f"journey:{journey_id}:{step}:"
                return {
                    m.removeprefix(prefix)
                    for m in (logical_id(r) for _, r in hook.sends())
                    if m.startswith(prefix)
                }

            if not await wait_for(lambda: len(asked("ask1")) >= len(people), args.setup_timeout):
                raise DrillError(f"only {len(asked('ask1'))} of {len(people)} were asked")
            setup_s = time.time() - setup_started
            say(f"{len(people)} enrollments wait at ask1 ({setup_s:.0f} s); posting events")

            started = time.time()
            schedule = [started + i / args.rate for i in range(len(people))]
            posts = asyncio.gather(
                *(
                    post_event(api, i, c, at, args)
                    for i, (c, at) in enumerate(zip(people, schedule, strict=True))
                )
            )

            async def outage() -> tuple[float, float]:
                proxy = cluster.proxy
                assert proxy is not None
                await asyncio.sleep(max(0.0, started + args.cut_at - time.time()))
                proxy.cut_for(args.outage)
                say(f"Temporal unreachable (proxy cut) for {args.outage} s")
                await wait_for(lambda: proxy.restored_at is not None, args.outage + 60, every=0.2)
                say("Temporal reachable again")
                assert proxy.cut_at is not None and proxy.restored_at is not None
                return proxy.cut_at, proxy.restored_at

            results, (cut_at, restored_at) = await asyncio.gather(posts, outage())
            posted_s = time.time() - started
            say(f"every event answered or given up after {posted_s:.0f} s; settling")

            def settled() -> bool:
                rows = cluster.query(
                    "SELECT count(*) FROM enrollments WHERE state = 'active'"
                    " AND NOT (variables ? 'a1')"
                )
                return bool(rows[0][0] == 0) and len(asked("ask2")) >= len(people)

            def progress() -> tuple[int, int]:
                stored = cluster.query("SELECT count(*) FROM enrollments WHERE variables ? 'a1'")[
                    0
                ][0]
                return stored, len(asked("ask2"))

            settled_in_time = await settle(settled, progress, args.settle, args.stall)
            settled_s = time.time() - started

    # How often each event reached its run (Temporal's history), and whether it was stored.
    signalled = await cluster.signalled_ids(
        (f"journey/drill/{journey_id}/contact/{c}" for c in people), "message", "message_id"
    )
    reached = Counter(
        len([m for m in ids if m == f"drill-event-{int(w.rsplit('/', 1)[-1][1:])}"])
        for w, ids in signalled.items()
    )
    rows = cluster.query(
        "SELECT c.external_id, e.state, e.current_step, e.variables, e.ended_by, e.end_reason"
        " FROM enrollments e JOIN contacts c ON c.id = e.contact_id WHERE e.journey_id = %s",
        [journey_id],
    )
    sends = hook.sends()
    ask2 = Counter(
        logical_id(r).rsplit(":", 1)[-1]
        for _, r in sends
        if logical_id(r).startswith(f"journey:{journey_id}:ask2:")
    )
    keys = by_key(sends)
    statuses = cluster.delivery_statuses()
    duplicate_keys = {k: len(v) for k, v in keys.items() if len(v) > 1}
    unexcused = {k: n for k, n in duplicate_keys.items() if statuses.get(k) != "unknown"}

    fate: dict[str, str] = {}
    evidence: dict[str, list[Any]] = {"lost": [], "late": [], "twice": [], "other": []}
    for external_id, state, step, variables, ended_by, end_reason in rows:
        expected = f"answer-{int(external_id[1:])}"
        a1, a2 = variables.get("a1"), variables.get("a2")
        times = signalled.get(f"journey/drill/{journey_id}/contact/{external_id}", [])
        if state == "active" and a1 is None:
            # Reached its run (in the history) but not stored yet: late; never reached: lost.
            kind = "late" if f"drill-event-{int(external_id[1:])}" in times else "lost"
        elif state == "active" and a1 == expected and a2 is None:
            kind = "once"
        elif a1 == expected and (a2 is not None or state in ("exited", "completed")):
            kind = "twice"
        else:
            kind = "other"
        fate[external_id] = kind
        if kind != "once":
            evidence[kind].append([external_id, state, step, variables, ended_by, end_reason])
    counts = Counter(fate.values())
    answers: Counter[str] = Counter()
    for r in results:
        answers.update(r.answers)
    never_accepted = [r for r in results if r.status is None]
    lost_ids = {c for c, k in fate.items() if k == "lost"}
    lost_by_answer = Counter(
        results[int(c[1:])].status or "never accepted" for c in lost_ids
    )  # what the API said to the events that were lost

    stored = cluster.count_by(
        "SELECT 'stored', count(*) FROM messages WHERE external_message_id LIKE 'drill-event-%%'"
    ).get("stored", 0)
    for samples in evidence.values():
        for sample in samples:
            wid = f"journey/drill/{journey_id}/contact/{sample[0]}"
            sample.append({"signals_in_history": signalled.get(wid)})

    report.figure("events", len(people))
    report.figure("setup_s", round(setup_s, 1))
    report.figure("outage_s", round(restored_at - cut_at, 1))
    report.figure("cut_at_s", round(cut_at - started, 1))
    report.figure("posting_s", round(posted_s, 1))
    report.figure("accepted", sum(1 for r in results if r.status == "accepted"))
    report.figure("answered_duplicate", sum(1 for r in results if r.status == "duplicate"))
    report.figure("never_accepted", len(never_accepted))
    report.figure("retried_events", sum(1 for r in results if r.tries > 1))
    report.figure("max_tries", max((r.tries for r in results), default=0))
    report.figure("answers", dict(answers))
    report.figure("events_in_contact_history", stored)
    report.figure("runs_by_times_their_event_was_signalled", dict(sorted(reached.items())))
    report.figure("handled_once", counts["once"])
    report.figure("lost", counts["lost"])
    report.figure("lost_by_final_answer", dict(lost_by_answer))
    report.figure("late_reached_run_not_yet_stored", counts["late"])
    report.figure("handled_twice", counts["twice"])
    report.figure("other", counts["other"])
    report.figure("enrollments_missing", len(people) - len(rows))
    report.figure("ask2_questions_received", sum(ask2.values()))
    report.figure("ask2_sent_more_than_once", sum(1 for n in ask2.values() if n > 1))
    report.figure("duplicate_keys_unexcused", len(unexcused))
    report.figure("settled", settled_in_time)
    report.figure("settled_after_s", round(settled_s, 1))
    report.figure(
        "proxy", {"connections": cluster.proxy.connections, "resets": cluster.proxy.resets}
    )
    report.figure(
        "enrollments_by_state",
        cluster.count_by(
            "SELECT state || ':' || coalesce(current_step, '-'), count(*) FROM enrollments"
            " GROUP BY 1"
        ),
    )
    report.evidence.update({k: v[:10] for k, v in evidence.items()})
    report.evidence["never_accepted_sample"] = [
        {"event": r.index, "tries": r.tries, "answers": dict(r.answers), "error": r.error}
        for r in never_accepted[:10]
    ]

    report.check(
        "events never accepted (client gave up)", len(never_accepted), not never_accepted, "0"
    )
    report.check("events lost (never reached their run)", counts["lost"], counts["lost"] == 0, "0")
    report.check(
        "events reached but not handled by the end", counts["late"], counts["late"] == 0, "0"
    )
    report.check("events handled twice", counts["twice"], counts["twice"] == 0, "0")
    report.check("enrollments in another state", counts["other"], counts["other"] == 0, "0")
    report.check("duplicate keys not recorded unknown", len(unexcused), not unexcused, "0")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=20, help="events posted per second")
    parser.add_argument("--cut-at", type=float, default=10, help="seconds after the first event")
    parser.add_argument("--outage", type=float, default=30, help="seconds Temporal is unreachable")
    parser.add_argument("--timeout", type=float, default=10, help="client timeout per request")
    parser.add_argument("--clients", type=int, default=32, help="requests in flight at most")
    parser.add_argument("--retry-for", type=float, default=180, help="client retries this long")
    parser.add_argument("--settle", type=float, default=240, help="longest wait after posting")
    parser.add_argument(
        "--stall", type=float, default=60, help="stop waiting after this long without progress"
    )
    parser.add_argument("--setup-timeout", type=float, default=480)
    common_arguments(parser)
    args = parser.parse_args()
    parameters = {k: v for k, v in vars(args).items() if k != "keep"}
    return run_drill(
        "temporal_outage",
        ClusterOptions(workers=2, proxy=True, keep=args.keep, source=args.source),
        lambda cluster, report: drill(cluster, report, args),
        parameters,
    )


if __name__ == "__main__":
    raise SystemExit(main())
