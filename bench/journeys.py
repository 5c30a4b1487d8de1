"""Journey benchmark on a `nudge dev` stack (see the README, "Benchmarks").

Each figure stands beside the same work done by bare workflows on the same server:
(a) idle exit latency: one incoming message at a time for N enrolled contacts, from the
    event's 202 until that enrollment has closed (p50/p99), beside a bare signal-and-complete;
(b) burst: an incoming message for each of M waiting enrollments at once (posted in batches
    of 100 to `POST /v1/events/messages/batch`, 4 at a time), until all closed, beside M bare
    signals to M bare waiting workflows (16 at a time);
(c) one stop-all of M enrollments, until none is running, beside (b)'s bare figure.

    .venv/bin/python -m bench.journeys [--idle 200] [--burst 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from bench.bare import Waiter
from bench.common import Stack, dev_stack, ok, percentile
from nudge.naming import journey_workflow_id

TARGETS = {"idle_p99_ms": 300, "burst_ratio_max": 1.5, "stop_all_ratio_max": 1.5}
LIMIT = asyncio.Semaphore(16)
# The burst goes as a service forwarding it would: batches of events, a few at a time.
BATCH = 100
BATCHES_IN_FLIGHT = 4


def waiting_journey(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "trigger": {"type": "api"},
        "settings": {"exit_conditions": ["incoming_message"]},
        "steps": [
            {"id": "wait-3-days", "type": "wait", "minutes": 4320},
            {"id": "done", "type": "end"},
        ],
    }


async def published_journey(api: httpx.AsyncClient, name: str) -> str:
    created = ok(await api.post("/v1/journeys", json=waiting_journey(name))).json()
    ok(await api.post(f"/v1/journeys/{created['id']}/publish"))
    journey_id: str = created["id"]
    return journey_id


async def enroll_all(api: httpx.AsyncClient, journey_id: str, contacts: list[str]) -> None:
    async def one(contact: str) -> None:
        async with LIMIT:
            ok(await api.put(f"/v1/contacts/{contact}", json={"name": contact}))
            ok(
                await api.post(
                    f"/v1/journeys/{journey_id}/enrollments", json={"contact_id": contact}
                )
            )

    await asyncio.gather(*(one(c) for c in contacts))
    await all_waiting(api, journey_id, len(contacts))


async def all_waiting(api: httpx.AsyncClient, journey_id: str, count: int) -> None:
    """Until every enrollment's run has recorded its wait: an enrollment's POST is answered
    once its run is started, and a figure taken while runs are still starting measures
    them too."""
    deadline = time.monotonic() + 600
    waiting = 0
    while time.monotonic() < deadline:
        waiting, cursor = 0, None
        while True:
            params: dict[str, Any] = {"state": "active", "limit": 200}
            if cursor:
                params["cursor"] = cursor
            body = ok(await api.get(f"/v1/journeys/{journey_id}/enrollments", params=params)).json()
            waiting += sum(1 for e in body["items"] if e["waiting_until"] is not None)
            cursor = body["next_cursor"]
            if not cursor:
                break
        if waiting >= count:
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{count - waiting} of {count} enrollments never reached their wait")


# Words no journey of the demo tenant is triggered by: "hi" would start its chat menu for
# every contact as well, and the figures would count 2 000 journeys more than the exits.
NEUTRAL_TEXT = "thanks, all sorted"


def event(contact: str) -> dict[str, str]:
    return {
        "contact_id": contact,
        "direction": "incoming",
        "channel": "console",
        "text": NEUTRAL_TEXT,
        "message_id": uuid.uuid4().hex,
    }


async def idle_latency(
    stack: Stack, api: httpx.AsyncClient, service: httpx.AsyncClient, client: Client, count: int
) -> dict[str, float]:
    journey_id = await published_journey(api, f"bench idle {count}")
    contacts = [f"idle-{i}" for i in range(count)]
    await enroll_all(api, journey_id, contacts)
    nudge_ms = []
    for contact in contacts:
        handle = client.get_workflow_handle(journey_workflow_id("demo", journey_id, contact))
        ok(await service.post("/v1/events/messages", json=event(contact)))
        accepted = time.perf_counter()
        await handle.result()
        nudge_ms.append((time.perf_counter() - accepted) * 1000)
    bare_ms = []
    queue = f"bench-idle-{uuid.uuid4().hex[:6]}"
    async with Worker(client, task_queue=queue, workflows=[Waiter]):
        for i in range(count):
            handle = await client.start_workflow(Waiter.run, id=f"{queue}-{i}", task_queue=queue)
            signalled = time.perf_counter()
            await handle.signal(Waiter.finish)
            await handle.result()
            bare_ms.append((time.perf_counter() - signalled) * 1000)
    return {
        "enrollments": count,
        "p50_ms": percentile(nudge_ms, 50),
        "p99_ms": percentile(nudge_ms, 99),
        "bare_p50_ms": percentile(bare_ms, 50),
        "bare_p99_ms": percentile(bare_ms, 99),
    }


async def all_closed(client: Client, journey_id: str, contacts: list[str]) -> None:
    async def one(contact: str) -> None:
        async with LIMIT:
            await client.get_workflow_handle(
                journey_workflow_id("demo", journey_id, contact)
            ).result()

    await asyncio.gather(*(one(c) for c in contacts))


async def bare_burst(client: Client, count: int) -> float:
    queue = f"bench-burst-{uuid.uuid4().hex[:6]}"
    async with Worker(client, task_queue=queue, workflows=[Waiter]):
        handles = []
        for chunk in range(0, count, 64):
            handles += await asyncio.gather(
                *(
                    client.start_workflow(Waiter.run, id=f"{queue}-{i}", task_queue=queue)
                    for i in range(chunk, min(count, chunk + 64))
                )
            )
        started = time.perf_counter()

        async def finish(handle: Any) -> None:
            async with LIMIT:
                await handle.signal(Waiter.finish)
                await handle.result()

        await asyncio.gather(*(finish(h) for h in handles))
        return time.perf_counter() - started


async def burst(
    api: httpx.AsyncClient, service: httpx.AsyncClient, client: Client, count: int
) -> dict[str, float]:
    journey_id = await published_journey(api, f"bench burst {count}")
    contacts = [f"burst-{i}" for i in range(count)]
    await enroll_all(api, journey_id, contacts)
    started = time.perf_counter()
    batches = [contacts[i : i + BATCH] for i in range(0, len(contacts), BATCH)]
    in_flight = asyncio.Semaphore(BATCHES_IN_FLIGHT)

    async def send(batch: list[str]) -> None:
        body = {"events": [event(c) for c in batch]}
        async with in_flight:
            # Over the tenant's events limit (200/s by default) a batch is refused whole
            # (429, nothing stored): sent again when Retry-After says, as a client should.
            for _ in range(100):
                answer = await service.post("/v1/events/messages/batch", json=body)
                if answer.status_code != 429:
                    break
                await asyncio.sleep(float(answer.headers["retry-after"]))
            ok(answer)

    await asyncio.gather(*(send(b) for b in batches))
    posted_s = time.perf_counter() - started  # every event answered 202
    await all_closed(client, journey_id, contacts)
    nudge_s = time.perf_counter() - started
    bare_s = await bare_burst(client, count)
    return {
        "enrollments": count,
        "posted_s": posted_s,
        "nudge_s": nudge_s,
        "bare_s": bare_s,
        "ratio": nudge_s / bare_s,
    }


async def stop_all(
    api: httpx.AsyncClient, client: Client, count: int, bare_s: float
) -> dict[str, float]:
    journey_id = await published_journey(api, f"bench stop-all {count}")
    contacts = [f"stop-{i}" for i in range(count)]
    await enroll_all(api, journey_id, contacts)
    started = time.perf_counter()
    ok(await api.post(f"/v1/journeys/{journey_id}/stop", json={"reason": "benchmark"}))
    await all_closed(client, journey_id, contacts)
    nudge_s = time.perf_counter() - started
    return {
        "enrollments": count,
        "nudge_s": nudge_s,
        "bare_burst_s": bare_s,
        "ratio": nudge_s / bare_s,
    }


async def main(idle: int, burst_size: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as root, dev_stack(Path(root)) as stack:
        headers = {"Authorization": f"Bearer {stack.key}"}
        async with httpx.AsyncClient(base_url=stack.api, headers=headers, timeout=120) as api:
            service = api  # the demo admin key may also report events
            client = await Client.connect(
                stack.temporal_address, data_converter=pydantic_data_converter
            )
            report: dict[str, Any] = {"targets": TARGETS}
            report["idle_exit"] = await idle_latency(stack, api, service, client, idle)
            print(json.dumps(report["idle_exit"]), flush=True)
            report["burst"] = await burst(api, service, client, burst_size)
            print(json.dumps(report["burst"]), flush=True)
            report["stop_all"] = await stop_all(api, client, burst_size, report["burst"]["bare_s"])
            print(json.dumps(report["stop_all"]), flush=True)
            return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--idle", type=int, default=200)
    parser.add_argument("--burst", type=int, default=2000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.idle, args.burst)), indent=2))
