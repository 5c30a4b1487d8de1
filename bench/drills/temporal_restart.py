"""Drill: restart the Temporal dev server in the middle of polling, attempt schedules and
journey waits; every run must resume and finish on time.

Schedules are sped up (`NUDGE_TIME_SCALE`, 60 by default: a minute lasts a second). A
follow-up polls every 10 minutes (10 s) and reminds each of N records 3 times, 30 minutes
apart (`--notify-minutes`); M journey enrollments send a message, wait 60 minutes
(`--wait-minutes`) and send another. Once every record has had its first attempt and every
journey waits (plus `--restart-after` seconds), the dev server is stopped (SIGTERM, or SIGKILL with `--hard`), kept down for
`--down` seconds and started again on the same database file, as `nudge dev` starts it.
Just before the stop, the ITSM starts listing `--new-records` more tickets: a poll after the
restart must find them.

On time means, with `outage` = seconds from the stop until the server answered again and
`bound` = outage + `--grace`:
- each record: all its attempts arrive, once each, and the last one no later than
  first + (attempts - 1) x interval + bound; each new record's first attempt no later than
  interval + bound after it appeared;
- the poller: no gap between two polls longer than interval + bound, and it keeps polling;
- each journey: its second message arrives once, no later than first + wait + bound;
- every record and enrollment is ended (`completed`) in the database.

    .venv/bin/python -m bench.drills.temporal_restart                 # 200 records, 200 journeys
    .venv/bin/python -m bench.drills.temporal_restart --records 20 --journeys 20 --hard
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections import Counter, defaultdict
from typing import Any

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
    setup_call,
    wait_for,
    webhook_channel,
)

APPROVER = "approver"
POLL_MINUTES = 10  # the smallest a definition takes
ATTEMPTS = 3


def tickets(count: int, prefix: str) -> list[dict[str, Any]]:
    return [
        {"number": f"{prefix}{i:05d}", "approver": f"{APPROVER}@example.com"} for i in range(count)
    ]


def followup(itsm: TimedReceiver, notify_minutes: int) -> dict[str, Any]:
    return {
        "name": "drill: schedules across a restart",
        "status": "active",
        "data_extraction": {
            "polling_minutes": POLL_MINUTES,
            "integrations": [{"name": "tickets", "url": itsm.base_url + "/tickets"}],
            "looping_element": "tickets.result",
            "reconciliation_id": "number",
        },
        "recipients": {"user": {"source": "approver", "match_on": "email"}},
        "message": {"kind": "text", "text": "Please approve {{ followup.data.number }}"},
        "channel": "hook",
        "schedule": {"notify_minutes": notify_minutes, "attempts": ATTEMPTS},
    }


def journey(wait_minutes: int) -> dict[str, Any]:
    return {
        "name": "drill: a wait across a restart",
        "trigger": {"type": "api"},
        "steps": [
            {
                "id": "before",
                "type": "send_message",
                "channel": "hook",
                "message": {"kind": "text", "text": "before the wait"},
            },
            {"id": "wait", "type": "wait", "minutes": wait_minutes},
            {
                "id": "after",
                "type": "send_message",
                "channel": "hook",
                "message": {"kind": "text", "text": "after the wait"},
            },
            {"id": "done", "type": "end"},
        ],
    }


async def drill(cluster: Cluster, report: Report, args: argparse.Namespace) -> None:
    scale = args.scale
    interval = args.notify_minutes * 60 / scale
    poll_every = POLL_MINUTES * 60 / scale
    wait_s = args.wait_minutes * 60 / scale
    with TimedReceiver() as hook, TimedReceiver() as itsm:
        async with api_client(cluster) as api:
            await webhook_channel(api, "hook", hook)
            await setup_call(
                api.put,
                f"/v1/contacts/{APPROVER}",
                json={"name": APPROVER, "email": f"{APPROVER}@example.com"},
            )
            people = [f"w{i:04d}" for i in range(args.journeys)]
            await contacts(api, people)
            journey_id = await published_journey(api, journey(args.wait_minutes))
            first_batch = tickets(args.records, "OLD")
            itsm.serve_json("/tickets", {"result": first_batch})

            started = time.time()
            created = (
                await setup_call(
                    api.post, "/v1/followups", json=followup(itsm, args.notify_minutes)
                )
            ).json()
            await enroll(api, journey_id, people)
            say(f"runs started in {time.time() - started:.1f} s")

            def in_flight() -> bool:
                # Every first-batch record has had attempt 1 and every journey waits: the
                # restart then falls on attempt timers, journey waits and the poll schedule.
                got = {logical_id(r) for _, r in hook.sends()}
                return all(
                    f"followup:{t['number']}:1:{APPROVER}" in got for t in first_batch
                ) and all(f"journey:{journey_id}:before:{p}" in got for p in people)

            if not await wait_for(in_flight, args.setup_timeout):
                raise DrillError("the runs did not all start their schedules in time")
            await asyncio.sleep(args.restart_after)
            restart_s = time.time() - started
            # The restart. New tickets appear as the server goes down.
            itsm.serve_json("/tickets", {"result": first_batch + tickets(args.new_records, "NEW")})
            added_at = stopped_at = time.time()
            await asyncio.to_thread(cluster.stop_temporal, args.hard)
            say(f"Temporal stopped ({'SIGKILL' if args.hard else 'SIGTERM'}); down {args.down} s")
            await asyncio.sleep(args.down)
            await asyncio.to_thread(cluster.start_temporal)
            ready_at = time.time()
            outage = ready_at - stopped_at
            bound = outage + args.grace
            say(f"Temporal answers again after {outage:.1f} s; bound {bound:.1f} s")

            total_records = args.records + args.new_records
            # The last run due: a new record's last attempt (polled up to an interval late).
            due = max(
                added_at + poll_every + (ATTEMPTS - 1) * interval,
                stopped_at + wait_s,
            )

            def finished() -> bool:
                rows = cluster.query(
                    "SELECT (SELECT count(*) FROM followup_records WHERE state = 'completed'),"
                    " (SELECT count(*) FROM enrollments WHERE state = 'completed')"
                )[0]
                return bool(rows[0] >= total_records and rows[1] >= args.journeys)

            all_done = await wait_for(finished, max(0.0, due + bound - time.time()), every=1)
            done_at = time.time()
            if not all_done:  # a little longer, to tell "late" from "never"
                await wait_for(finished, args.extra, every=1)

    sends = hook.sends()
    keys = by_key(sends)
    first_arrival: dict[str, float] = {}
    arrivals: dict[str, list[float]] = defaultdict(list)
    for at, request in sends:
        arrivals[logical_id(request)].append(at)
    for message, times in arrivals.items():
        first_arrival[message] = min(times)

    # Records: attempts, once each, on schedule.
    late_records: dict[str, float] = {}
    missing_attempts: list[str] = []
    record_lateness: list[float] = []
    for ticket in [t["number"] for t in first_batch] + [
        t["number"] for t in tickets(args.new_records, "NEW")
    ]:
        times = [
            first_arrival.get(f"followup:{ticket}:{a}:{APPROVER}") for a in range(1, ATTEMPTS + 1)
        ]
        if any(t is None for t in times):
            missing_attempts += [f"{ticket}:{a}" for a, t in enumerate(times, start=1) if t is None]
            continue
        first, last = times[0], times[-1]
        assert first is not None and last is not None
        lateness = last - first - (ATTEMPTS - 1) * interval
        record_lateness.append(lateness)
        if lateness > bound:
            late_records[ticket] = round(lateness, 1)
    new_first = [
        first_arrival[f"followup:{t['number']}:1:{APPROVER}"] - added_at
        for t in tickets(args.new_records, "NEW")
        if f"followup:{t['number']}:1:{APPROVER}" in first_arrival
    ]
    new_late = [d for d in new_first if d > poll_every + bound]

    # The poller.
    polls = sorted(at for at, r in itsm.arrivals if r.path_only == "/tickets")
    gaps = [b - a for a, b in itertools.pairwise(polls)]
    polls_after = [p for p in polls if p >= ready_at]

    # Journeys.
    journey_lateness: list[float] = []
    journey_missing: list[str] = []
    for person in people:
        before = first_arrival.get(f"journey:{journey_id}:before:{person}")
        after = first_arrival.get(f"journey:{journey_id}:after:{person}")
        if before is None or after is None:
            journey_missing.append(person)
            continue
        journey_lateness.append(after - before - wait_s)
    late_journeys = [x for x in journey_lateness if x > bound]

    duplicate_keys = {k: len(v) for k, v in keys.items() if len(v) > 1}
    statuses = cluster.delivery_statuses()
    unexcused = {k: n for k, n in duplicate_keys.items() if statuses.get(k) != "unknown"}

    def top(values: list[float]) -> float | None:
        return round(max(values), 1) if values else None

    report.figure("restart_at_s", round(restart_s, 1))
    report.figure("outage_s", round(outage, 1))
    report.figure("bound_s", round(bound, 1))
    report.figure("records", total_records)
    report.figure("record_attempts_expected", total_records * ATTEMPTS)
    report.figure("record_attempts_missing", len(missing_attempts))
    report.figure("record_max_lateness_s", top(record_lateness))
    report.figure("records_late", len(late_records))
    report.figure("new_records_first_attempt_max_s", top(new_first))
    report.figure("new_records_first_attempt_target_s", round(poll_every + bound, 1))
    report.figure("polls", len(polls))
    report.figure("polls_after_restart", len(polls_after))
    report.figure("poll_max_gap_s", top(gaps))
    report.figure("journeys", args.journeys)
    report.figure("journeys_missing_a_message", len(journey_missing))
    report.figure("journey_max_lateness_s", top(journey_lateness))
    report.figure("journeys_late", len(late_journeys))
    report.figure("duplicate_keys", len(duplicate_keys))
    report.figure("duplicate_keys_unexcused", len(unexcused))
    report.figure("deliveries_by_status", dict(Counter(statuses.values())))
    report.figure(
        "records_by_state",
        cluster.count_by("SELECT state, count(*) FROM followup_records GROUP BY state"),
    )
    report.figure(
        "enrollments_by_state",
        cluster.count_by("SELECT state, count(*) FROM enrollments GROUP BY state"),
    )
    report.figure("all_done_by_due_plus_bound", all_done)
    report.figure("checked_after_due_s", round(done_at - due, 1))
    report.evidence["missing_attempts_sample"] = missing_attempts[:10]
    report.evidence["poller_in_temporal"] = await cluster.describe_runs(
        [f"followup/drill/{created['id']}"]
    )
    report.evidence["late_or_missing_runs_in_temporal"] = await cluster.describe_runs(
        [f"followup/drill/{created['id']}/record/{m.split(':')[0]}" for m in missing_attempts[:3]]
        + [f"journey/drill/{journey_id}/contact/{p}" for p in journey_missing[:3]]
    )
    report.evidence["late_records_sample"] = dict(list(late_records.items())[:10])
    report.evidence["journeys_missing_sample"] = journey_missing[:10]
    report.evidence["poll_times_s"] = [round(p - started, 1) for p in polls]
    report.evidence["stopped_ready_s"] = [
        round(stopped_at - started, 1),
        round(ready_at - started, 1),
    ]

    report.check("record attempts missing", len(missing_attempts), not missing_attempts, "0")
    report.check("records late", len(late_records), not late_records, f"0 (<= {bound:.0f} s)")
    report.check(
        "new records first attempt late",
        len(new_late),
        not new_late and len(new_first) == args.new_records,
        "0",
    )
    report.check(
        "poll max gap s",
        top(gaps),
        bool(gaps) and max(gaps) <= poll_every + bound,
        f"<= {poll_every + bound:.0f}",
    )
    report.check("polls after restart", len(polls_after), len(polls_after) >= 2, ">= 2")
    report.check("journeys missing a message", len(journey_missing), not journey_missing, "0")
    report.check("journeys late", len(late_journeys), not late_journeys, f"0 (<= {bound:.0f} s)")
    report.check("duplicate keys not recorded unknown", len(unexcused), not unexcused, "0")
    report.check("every run completed by due + bound", all_done, all_done, "True")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=200, help="records before the restart")
    parser.add_argument("--new-records", type=int, default=50, help="records that appear at it")
    parser.add_argument("--journeys", type=int, default=200)
    parser.add_argument("--scale", type=float, default=60, help="NUDGE_TIME_SCALE")
    parser.add_argument(
        "--restart-after",
        type=float,
        default=3,
        help="seconds after every run has started its schedule",
    )
    parser.add_argument("--notify-minutes", type=int, default=30, help="between attempts")
    parser.add_argument("--wait-minutes", type=int, default=60, help="the journey's wait")
    parser.add_argument("--setup-timeout", type=float, default=180)
    parser.add_argument("--down", type=float, default=10, help="seconds the server stays down")
    parser.add_argument("--grace", type=float, default=20, help="bound = outage + grace")
    parser.add_argument("--extra", type=float, default=60, help="look on this long when late")
    parser.add_argument("--hard", action="store_true", help="SIGKILL the server, not SIGTERM")
    common_arguments(parser)
    args = parser.parse_args()
    parameters = {k: v for k, v in vars(args).items() if k != "keep"}
    return run_drill(
        "temporal_restart",
        ClusterOptions(workers=2, time_scale=args.scale, keep=args.keep, source=args.source),
        lambda cluster, report: drill(cluster, report, args),
        parameters,
    )


if __name__ == "__main__":
    raise SystemExit(main())
