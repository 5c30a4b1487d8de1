"""Follow-up benchmark on a `nudge dev` stack (see the README, "Benchmarks").

(a) One poll finds N new records: seconds until every first reminder reached a webhook
    receiver, beside N bare workflows with one no-op activity on the same server.
(b) A poll of 10 000 records that have not changed: its time and the worker's peak memory.

    .venv/bin/python -m bench.followups [--sizes 1000 5000] [--unchanged 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from bench.common import Stack, bare_workflows, dev_stack, ok, wait_for
from tests.utils.receivers import WebhookReceiver

TARGETS = {"ratio": 0.5, "unchanged_poll_s": 3.0, "worker_peak_mb": 400}


def tickets(count: int, prefix: str) -> dict[str, Any]:
    return {
        "result": [
            {
                "number": f"{prefix}{i:06d}",
                "short_description": f"ticket {i}",
                "approver": "bench@example.com",
            }
            for i in range(count)
        ]
    }


def definition(name: str, itsm: WebhookReceiver, path: str) -> dict[str, Any]:
    return {
        "name": name,
        "status": "active",
        "data_extraction": {
            "polling_minutes": 7200,
            "integrations": [
                {"name": "tickets", "url": itsm.base_url + path, "timeout_seconds": 120}
            ],
            "looping_element": "tickets.result",
            "reconciliation_id": "number",
        },
        "recipients": {"user": {"source": "approver", "match_on": "email"}},
        "message": {"kind": "text", "text": "Please approve {{ followup.data.number }}"},
        "channel": "bench-hook",
        "schedule": {"notify_minutes": 7200, "attempts": 2},
    }


def first_attempts(hook: WebhookReceiver, followup_id: str) -> int:
    return sum(
        1
        for r in hook.requests
        if r.json
        and r.json["source"].get("followup_id") == followup_id
        and r.json["source"]["attempt"] == 1
    )


async def fan_out(
    stack: Stack, api: httpx.AsyncClient, itsm: WebhookReceiver, hook: WebhookReceiver, count: int
) -> dict[str, float]:
    path = f"/tickets-{count}"
    itsm.serve_json(path, tickets(count, f"N{count}-"))
    started = time.perf_counter()
    created = ok(
        await api.post("/v1/followups", json=definition(f"bench fan-out {count}", itsm, path))
    ).json()
    await wait_for(
        lambda: first_attempts(hook, created["id"]) >= count,
        timeout=1800,
        what="first attempts",
        every=0.2,
    )
    nudge_s = time.perf_counter() - started
    client = await Client.connect(stack.temporal_address, data_converter=pydantic_data_converter)
    bare_s = await bare_workflows(client, count)
    ok(await api.post(f"/v1/followups/{created['id']}/deactivate"))
    return {"records": count, "nudge_s": nudge_s, "bare_s": bare_s, "ratio": bare_s / nudge_s}


async def poll_durations(client: Client, workflow_id: str) -> list[float]:
    """Seconds each `poll_followup` activity took, from the poller's history."""
    scheduled: dict[int, float] = {}
    durations: list[float] = []
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            scheduled[event.event_id] = event.event_time.ToDatetime().timestamp()
        elif event.HasField("activity_task_completed_event_attributes"):
            begun = scheduled.get(event.activity_task_completed_event_attributes.scheduled_event_id)
            if begun is not None:
                durations.append(event.event_time.ToDatetime().timestamp() - begun)
    return durations


async def unchanged_poll(
    stack: Stack, api: httpx.AsyncClient, itsm: WebhookReceiver, hook: WebhookReceiver, count: int
) -> dict[str, float]:
    path = f"/unchanged-{count}"
    itsm.serve_json(path, tickets(count, f"U{count}-"))
    created = ok(
        await api.post("/v1/followups", json=definition(f"bench unchanged {count}", itsm, path))
    ).json()
    await wait_for(
        lambda: first_attempts(hook, created["id"]) >= count,
        timeout=3600,
        what="first attempts",
        every=0.5,
    )
    client = await Client.connect(stack.temporal_address, data_converter=pydantic_data_converter)
    workflow_id = f"followup/demo/{created['id']}"
    before = len(await poll_durations(client, workflow_id))
    ok(await api.post(f"/v1/followups/{created['id']}/poll"))
    durations: list[float] = []
    for _ in range(600):
        durations = await poll_durations(client, workflow_id)
        if len(durations) > before:
            break
        await asyncio.sleep(0.2)
    assert len(durations) > before, "the poll did not finish"
    result = {"records": count, "poll_s": durations[-1], "worker_peak_mb": stack.worker_peak_mb()}
    ok(await api.post(f"/v1/followups/{created['id']}/deactivate"))
    return result


async def main(sizes: list[int], unchanged: int) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory() as root,
        dev_stack(Path(root)) as stack,
        WebhookReceiver() as itsm,
        WebhookReceiver() as hook,
    ):
        async with httpx.AsyncClient(
            base_url=stack.api, headers={"Authorization": f"Bearer {stack.key}"}, timeout=60
        ) as api:
            ok(await api.put("/v1/contacts/bench", json={"email": "bench@example.com"}))
            ok(
                await api.put(
                    "/v1/channels/bench-hook",
                    json={"type": "webhook", "config": {"url": hook.url}},
                )
            )
            report: dict[str, Any] = {"fan_out": [], "targets": TARGETS}
            for size in sizes:
                report["fan_out"].append(await fan_out(stack, api, itsm, hook, size))
                print(json.dumps(report["fan_out"][-1]), flush=True)
            if unchanged:
                report["unchanged_poll"] = await unchanged_poll(stack, api, itsm, hook, unchanged)
                print(json.dumps(report["unchanged_poll"]), flush=True)
            return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 5000])
    parser.add_argument("--unchanged", type=int, default=10_000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.sizes, args.unchanged)), indent=2))
