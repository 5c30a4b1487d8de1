"""Inbox benchmark on PostgreSQL: an agent's queue among 10 000 interactions, and how soon
a new message shows on an open inbox page.

A throwaway database (`createdb` on 127.0.0.1:5432, dropped at the end), migrated; the API
in this process under uvicorn on a free loopback port, with Temporal's time-skipping test
server from its wheel. One tenant: 6 queues, an agent in 2 of them, 10 000 interactions
inserted with SQLAlchemy Core (spread over queues, statuses, priorities, channel kinds and
tags; a third of them are ended), and 2 000 more of another tenant around them.

(a) 200 requests of each query shape of the agent's queue, one at a time:
`status=new&sort=priority`, `sort=channel&tag=vip`, `status=open&sort=priority&tag=billing`.
Target p99 < 100 ms.

(b) An agent signed in at `/inbox/sign-in` listens on `/inbox/events` (an httpx stream
with the session cookie); 50 messages posted one by one to `POST /v1/events/messages`,
each timed from the post until the `changed` event arrives. Target p99 < 1 s.

    .venv/bin/python -m bench.inbox [--interactions 10000] [--requests 200] [--messages 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from cryptography.fernet import Fernet
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.common import percentile
from nudge.api.app import create_app
from nudge.models.db import create_engine, migrate, session_factory, transaction
from nudge.models.inbox import CHANNEL_ORDER, PRIORITY_RANK
from nudge.models.tables import Contact, Interaction, InteractionTag, new_id
from nudge.settings import Settings
from nudge.store.tenants import Role, create_api_key, create_tenant
from tests.conftest import time_skipping_server
from tests.utils.receivers import free_port

PG = ("-h", "127.0.0.1", "-U", "postgres")
TARGET_QUEUE_MS = 100.0
TARGET_LIVE_MS = 1_000.0
QUEUES = ("support", "sales", "billing", "vip", "returns", "night")
AGENT_QUEUES = ("support", "sales")
TAGS = ("vip", "billing", "refund", "complaint", "delivery", "lead", "spam", "urgent")
STATUS_SPREAD = ("new",) * 3 + ("open",) * 2 + ("resolved",) * 2 + ("ended",) * 3
PRIORITY_SPREAD = ("low",) + ("normal",) * 6 + ("high",) * 2 + ("urgent",)
SHAPES = {
    "status=new&sort=priority": {"status": "new", "sort": "priority"},
    "sort=channel&tag=vip": {"sort": "channel", "tag": "vip"},
    "status=open&sort=priority&tag=billing": {
        "status": "open",
        "sort": "priority",
        "tag": "billing",
    },
}
BENCH_ROLES: tuple[Role, ...] = ("admin", "service")  # agent keys are made per agent
CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')
CHANNEL = "chat-main"  # the channel live messages come on; `support` is its default queue


@dataclass
class Keys:
    tenant_id: str
    admin: str
    service: str


# The database -------------------------------------------------------------------------------


@contextlib.contextmanager
def throwaway_database() -> Any:
    name = f"bench_inbox_{uuid.uuid4().hex[:8]}"
    subprocess.run(["createdb", *PG, name], check=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        subprocess.run(["dropdb", *PG, "--force", name], check=False)


async def make_tenant(engine: AsyncEngine) -> Keys:
    async with transaction(session_factory(engine)) as session:
        tenant = await create_tenant(session, f"bench-{uuid.uuid4().hex[:8]}")
        keys = {role: await create_api_key(session, tenant, role) for role in BENCH_ROLES}
    return Keys(tenant.id, keys["admin"], keys["service"])


def _interaction_rows(
    tenant_id: str, contact_ids: list[str], rng: random.Random, now: datetime
) -> list[dict[str, Any]]:
    rows = []
    for number, contact_id in enumerate(contact_ids, start=1):
        kind = rng.choice(CHANNEL_ORDER)
        status = rng.choice(STATUS_SPREAD)
        priority = rng.choice(PRIORITY_SPREAD)
        queue = rng.choice(QUEUES)
        at = now - timedelta(minutes=rng.randint(1, 90 * 24 * 60))
        assignee = None if status == "new" or rng.random() < 0.3 else rng.choice(("ana", "bo"))
        rows.append(
            {
                "id": new_id(),
                "tenant_id": tenant_id,
                "case_number": number,
                "contact_id": contact_id,
                "channel": f"{kind}-main",
                "channel_kind": kind,
                "channel_rank": len(CHANNEL_ORDER) - 1 - CHANNEL_ORDER.index(kind),
                "digital_id": contact_id,
                "queue": queue,
                "assignee": None if status == "ended" else assignee,
                "status": status,
                "priority": priority,
                "priority_rank": PRIORITY_RANK[priority],
                "unread": rng.randint(0, 3),
                "preview": "Hello, about my order",
                "outbound": False,
                "created_at": at,
                "received_at": at + timedelta(minutes=rng.randint(0, 600)),
                "updated_at": now,
                "queued_at": at,
                "replies": rng.randint(0, 4),
                "ended_at": at + timedelta(hours=2) if status == "ended" else None,
            }
        )
    return rows


async def fill(engine: AsyncEngine, tenant_id: str, count: int, seed: int) -> None:
    """``count`` contacts, one interaction each, and tags on about 40% of them."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    contacts = [
        {"id": new_id(), "tenant_id": tenant_id, "external_id": f"c{i}", "name": f"Contact {i}"}
        for i in range(count)
    ]
    rows = _interaction_rows(tenant_id, [c["id"] for c in contacts], rng, now)
    tags = [
        {"interaction_id": row["id"], "tag": tag}
        for row in rows
        if rng.random() < 0.4
        for tag in rng.sample(TAGS, rng.randint(1, 3))
    ]
    async with engine.begin() as connection:
        await connection.execute(insert(Contact), contacts)
        await connection.execute(insert(Interaction), rows)
        await connection.execute(insert(InteractionTag), tags)
        await connection.execute(
            text("INSERT INTO interaction_counters (tenant_id, last) VALUES (:t, :n)"),
            {"t": tenant_id, "n": count},
        )
        await connection.execute(text("ANALYZE"))


# The API ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(url: str, data_dir: Path) -> AsyncIterator[str]:
    """The API on a free loopback port, with the time-skipping Temporal test server."""
    async with time_skipping_server() as env:
        settings = Settings(
            env="test",
            data_dir=data_dir,
            database_url=url,
            secret_key=Fernet.generate_key().decode(),
            task_queue=f"bench-{uuid.uuid4().hex[:8]}",
            public_url="http://127.0.0.1",
        )
        app = create_app(settings, temporal=env.client)
        port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110  (uvicorn offers no event to wait on)
            await asyncio.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            await task


async def ok(response: Any, expected: int = 200) -> Any:
    answer = await response
    if answer.status_code != expected:
        raise RuntimeError(f"{answer.request.method} {answer.request.url}: {answer.text}")
    return answer.json() if answer.content else None


async def set_up(api: httpx.AsyncClient, keys: Keys) -> str:
    """Queues, the agent `ana` in two of them, `bo` elsewhere, a chat channel; ana's key."""
    admin = {"Authorization": f"Bearer {keys.admin}"}
    await ok(api.put(f"/v1/channels/{CHANNEL}", json={"type": "log"}, headers=admin))
    for queue in QUEUES:
        body: dict[str, Any] = {"name": queue.title()}
        if queue == "support":
            body["default_for_channels"] = [CHANNEL]
        await ok(api.put(f"/v1/queues/{queue}", json=body, headers=admin))
    for agent, queues in (("ana", list(AGENT_QUEUES)), ("bo", ["billing", "vip"])):
        body = {"name": agent.title(), "email": f"{agent}@corp.example", "queues": queues}
        await ok(api.put(f"/v1/agents/{agent}", json=body, headers=admin))
    created = await ok(
        api.post("/v1/api-keys", json={"role": "agent", "agent": "ana"}, headers=admin), 201
    )
    return str(created["api_key"])


# (a) The queue ------------------------------------------------------------------------------


async def measure_queue(api: httpx.AsyncClient, agent_key: str, requests: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {agent_key}"}
    figures: dict[str, Any] = {}
    for name, params in SHAPES.items():
        await ok(api.get("/v1/interactions", params=params, headers=headers))  # warm
        times = []
        listed = 0
        for _ in range(requests):
            started = time.perf_counter()
            page = await ok(api.get("/v1/interactions", params=params, headers=headers))
            times.append((time.perf_counter() - started) * 1000)
            listed = len(page["items"])
        figures[name] = {"times": times, "listed": listed}
    return figures


# (b) Live ----------------------------------------------------------------------------------


async def signed_in(base: str, agent_key: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=base, timeout=30)
    form = await client.get("/inbox/sign-in")
    found = CSRF.search(form.text)
    if found is None:
        raise RuntimeError("no CSRF token on the sign-in page")
    answer = await client.post("/inbox/sign-in", data={"key": agent_key, "csrf": found[1]})
    if answer.status_code != 303:
        raise RuntimeError(f"sign-in: {answer.status_code} {answer.text[:200]}")
    return client


async def listen(page: httpx.AsyncClient, heard: asyncio.Queue[float]) -> None:
    """Each `changed` event's arrival time; a stream that ends (every 60 s) is reopened."""
    while True:
        async with page.stream("GET", "/inbox/events") as stream:
            async for line in stream.aiter_lines():
                if line.startswith("event: changed"):
                    heard.put_nowait(time.perf_counter())


async def measure_live(
    api: httpx.AsyncClient, base: str, keys: Keys, agent_key: str, messages: int
) -> list[float]:
    service = {"Authorization": f"Bearer {keys.service}"}
    admin = {"Authorization": f"Bearer {keys.admin}"}
    for i in range(messages):
        await ok(api.put(f"/v1/contacts/live{i}", json={"name": f"Live {i}"}, headers=admin))
    page = await signed_in(base, agent_key)
    heard: asyncio.Queue[float] = asyncio.Queue()
    listener = asyncio.create_task(listen(page, heard))
    await asyncio.sleep(1.5)  # the stream's first look, where changes count from
    rng = random.Random(7)
    times = []
    try:
        for i in range(messages):
            while not heard.empty():
                heard.get_nowait()
            body = {
                "contact_id": f"live{i}",
                "direction": "incoming",
                "channel": CHANNEL,
                "text": f"Hello {i}",
                "message_id": uuid.uuid4().hex,
            }
            started = time.perf_counter()
            await ok(api.post("/v1/events/messages", json=body, headers=service), 202)
            arrived = await asyncio.wait_for(heard.get(), timeout=10)
            times.append((arrived - started) * 1000)
            # Out of step with the page's polling, as real messages are.
            await asyncio.sleep(rng.uniform(0.05, 0.6))
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        await page.aclose()
    return times


# Report -------------------------------------------------------------------------------------


def summary(times: list[float]) -> str:
    return (
        f"p50 {percentile(times, 50):7.1f} ms  p95 {percentile(times, 95):7.1f} ms"
        f"  p99 {percentile(times, 99):7.1f} ms  max {max(times):7.1f} ms"
    )


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


async def run(interactions: int, requests: int, messages: int) -> bool:
    with throwaway_database() as url, tempfile.TemporaryDirectory() as data:
        migrate(url)
        engine = create_engine(url)
        keys = await make_tenant(engine)
        neighbour = await make_tenant(engine)
        started = time.perf_counter()
        await fill(engine, keys.tenant_id, interactions, seed=1)
        await fill(engine, neighbour.tenant_id, interactions // 5, seed=2)
        print(
            f"inserted {interactions} (+{interactions // 5}) in {time.perf_counter() - started:.1f} s"
        )
        await engine.dispose()
        async with (
            serving(url, Path(data)) as base,
            httpx.AsyncClient(base_url=base, timeout=30) as api,
        ):
            agent_key = await set_up(api, keys)
            print(f"load before: {uptime()}")
            queue = await measure_queue(api, agent_key, requests)
            print(f"load after queue: {uptime()}")
            live = await measure_live(api, base, keys, agent_key, messages)
            print(f"load after live: {uptime()}")
    passed = True
    for name, figures in queue.items():
        hit = percentile(figures["times"], 99) < TARGET_QUEUE_MS
        passed &= hit
        verdict = "HIT" if hit else "MISS"
        print(f"(a) {name:40} {summary(figures['times'])}  [{figures['listed']} listed] {verdict}")
    hit = percentile(live, 99) < TARGET_LIVE_MS
    passed &= hit
    print(
        f"(b) message -> /inbox/events ({len(live)})      {summary(live)} {'HIT' if hit else 'MISS'}"
    )
    print(
        f"verdict: {'HIT' if passed else 'MISS'} (p99 < {TARGET_QUEUE_MS:.0f} ms, < {TARGET_LIVE_MS:.0f} ms)"
    )
    return passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--interactions", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--strict", action="store_true", help="exit 1 on a MISS")
    args = parser.parse_args()
    passed = asyncio.run(run(args.interactions, args.requests, args.messages))
    if args.strict and not passed:
        raise SystemExit(1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
