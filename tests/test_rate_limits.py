"""Per-tenant rate limits on events, sends and poll-now: 429 with Retry-After, nothing stored,
one tenant never limits another, and limits counted in Redis hold across API processes."""

from __future__ import annotations

import socket
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from limits import parse
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from nudge.api.rate_limits import REFUSED, UNCHECKED
from nudge.models.tables import Notification
from nudge.settings import Settings
from tests.conftest import TenantKeys, api_client

REDIS_URL = "redis://127.0.0.1:6379"

# Small limits for every test of this module (the `api` fixture reads these settings).
LIMITS = {
    "rate_limit_events": "3/minute",
    "rate_limit_notifications": "2/minute",
    "rate_limit_poll": "2/minute",
}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={**LIMITS, "rate_limit_key_prefix": f"test-{uuid.uuid4().hex[:12]}"}
    )


async def _contact(api: httpx.AsyncClient, tenant: TenantKeys, external_id: str = "ada") -> None:
    answer = await api.put(
        f"/v1/contacts/{external_id}", json={"name": "Ada"}, headers=tenant.headers()
    )
    assert answer.status_code == 200, answer.text


def _message(message_id: str, contact_id: str = "ada") -> dict[str, Any]:
    return {
        "contact_id": contact_id,
        "direction": "incoming",
        "channel": "whatsapp",
        "text": f"message {message_id}",
        "message_id": message_id,
    }


async def _post_message(
    api: httpx.AsyncClient, tenant: TenantKeys, message_id: str
) -> httpx.Response:
    return await api.post(
        "/v1/events/messages", json=_message(message_id), headers=tenant.headers("service")
    )


def _retry_after(answer: httpx.Response, at_most: int) -> int:
    """The 429's Retry-After: whole seconds, at least one, within the window."""
    assert answer.status_code == 429, answer.text
    seconds = int(answer.headers["retry-after"])
    assert 1 <= seconds <= at_most
    assert set(answer.json()) == {"detail"}
    return seconds


async def _history(api: httpx.AsyncClient, tenant: TenantKeys) -> list[str]:
    answer = await api.get("/v1/contacts/ada/messages", headers=tenant.headers())
    assert answer.status_code == 200, answer.text
    return [item["text"] for item in answer.json()["items"]]


# --- settings ---


def test_the_defaults_are_above_what_a_busy_integration_sends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("STORAGE", "EVENTS", "NOTIFICATIONS", "POLL"):
        monkeypatch.delenv(f"NUDGE_RATE_LIMIT_{name}", raising=False)
    defaults = Settings()

    def per_second(limit: str) -> float:
        item = parse(limit)
        return item.amount / item.get_expiry()

    assert per_second(defaults.rate_limit_events) >= 200
    assert per_second(defaults.rate_limit_notifications) >= 50
    # Poll-now: a burst of clicks or change hooks passes, a loop hammering the ITSM does not.
    poll = parse(defaults.rate_limit_poll)
    assert poll.amount >= 5 and 1 / 60 <= per_second(defaults.rate_limit_poll) <= 1
    assert defaults.rate_limit_storage == "memory://"


def test_limits_come_from_nudge_variables_and_bad_ones_stop_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NUDGE_RATE_LIMIT_EVENTS", "1000 per 2 seconds")
    monkeypatch.setenv("NUDGE_RATE_LIMIT_STORAGE", "redis://redis:6379")
    settings = Settings()
    assert parse(settings.rate_limit_events).amount == 1000
    assert settings.rate_limit_storage == "redis://redis:6379"

    for variable, value in [
        ("NUDGE_RATE_LIMIT_EVENTS", "lots"),
        ("NUDGE_RATE_LIMIT_NOTIFICATIONS", "0/second"),
        ("NUDGE_RATE_LIMIT_POLL", "10/fortnight"),
        ("NUDGE_RATE_LIMIT_STORAGE", "memcached://cache:11211"),
        ("NUDGE_RATE_LIMIT_STORAGE", "redis"),
    ]:
        with monkeypatch.context() as patch:
            patch.setenv(variable, value)
            with pytest.raises(ValidationError, match=variable.removeprefix("NUDGE_").lower()):
                Settings()


# --- over the limit: 429, and nothing of the request is kept ---


async def test_events_over_the_limit_are_refused_and_not_stored(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    await _contact(api, tenant)
    refused = REFUSED["events"]
    for n in range(3):
        answer = await _post_message(api, tenant, f"m{n}")
        assert answer.status_code == 202, answer.text

    over = await _post_message(api, tenant, "m3")
    _retry_after(over, 60)
    assert "3 events of a tenant per minute" in over.json()["detail"]
    assert "NUDGE_RATE_LIMIT_EVENTS" in over.json()["detail"]
    # Assignments count in the same budget (every /v1/events route together).
    assignment = await api.post(
        "/v1/events/assignments",
        json={"contact_id": "ada", "assignee": "grace", "manual": True},
        headers=tenant.headers("service"),
    )
    _retry_after(assignment, 60)
    assert REFUSED["events"] == refused + 2

    history = await _history(api, tenant)
    assert sorted(history) == ["message m0", "message m1", "message m2"]


async def test_sends_over_the_limit_are_refused_and_no_notification_exists(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    sessions: async_sessionmaker[AsyncSession],
    worker: object,
    time_env: WorkflowEnvironment,
) -> None:
    await _contact(api, tenant)
    channel = await api.put("/v1/channels/console", json={"type": "log"}, headers=tenant.headers())
    assert channel.status_code == 200, channel.text
    refused = REFUSED["notifications"]

    def send(text: str) -> Any:
        return api.post(
            "/v1/notifications",
            json={
                "contact_id": "ada",
                "channel": "console",
                "message": {"kind": "text", "text": text},
            },
            headers=tenant.headers("service"),
        )

    queued = [await send(f"send {n}") for n in range(2)]
    assert [q.status_code for q in queued] == [202, 202], [q.text for q in queued]
    over = await send("send 2")
    _retry_after(over, 60)
    assert "2 notifications of a tenant per minute" in over.json()["detail"]
    assert REFUSED["notifications"] == refused + 1

    for q in queued:
        await time_env.client.get_workflow_handle(q.json()["workflow_id"]).result()
    async with sessions() as session:
        stored = await session.scalar(
            select(func.count())
            .select_from(Notification)
            .where(Notification.tenant_id == tenant.id)
        )
    assert stored == 2
    assert "send 2" not in await _history(api, tenant)


async def test_poll_now_is_limited_per_follow_up(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    # The limit is checked before the route looks the follow-up up: unknown ones count too.
    for _ in range(2):
        assert (
            await api.post("/v1/followups/one/poll", headers=tenant.headers())
        ).status_code == 404
    over = await api.post("/v1/followups/one/poll", headers=tenant.headers())
    _retry_after(over, 60)
    assert "2 poll-now requests of a follow-up per minute" in over.json()["detail"]
    # Another follow-up of the same tenant has a budget of its own.
    assert (await api.post("/v1/followups/two/poll", headers=tenant.headers())).status_code == 404


async def test_one_tenant_over_its_limit_does_not_limit_another(
    api: httpx.AsyncClient, make_tenant: Any
) -> None:
    busy: TenantKeys = await make_tenant()
    quiet: TenantKeys = await make_tenant()
    for tenant in (busy, quiet):
        await _contact(api, tenant)
    for n in range(3):
        assert (await _post_message(api, busy, f"m{n}")).status_code == 202
    _retry_after(await _post_message(api, busy, "m3"), 60)

    for n in range(3):
        answer = await _post_message(api, quiet, f"m{n}")
        assert answer.status_code == 202, answer.text
    assert len(await _history(api, quiet)) == 3


async def test_the_window_moves_on_and_retry_after_says_when(
    api: httpx.AsyncClient, tenant: TenantKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The clock the limiter reads, moved on by the test instead of waited for.
    real_time = time.time
    offset = 0.0
    monkeypatch.setattr(time, "time", lambda: real_time() + offset)

    await _contact(api, tenant)
    for n in range(3):
        assert (await _post_message(api, tenant, f"m{n}")).status_code == 202
    assert _retry_after(await _post_message(api, tenant, "m3"), 60) >= 59

    offset = 30.0
    assert 29 <= _retry_after(await _post_message(api, tenant, "m3"), 60) <= 31

    offset = 61.0  # the three accepted ones have left the one-minute window
    for n in range(3, 6):
        answer = await _post_message(api, tenant, f"m{n}")
        assert answer.status_code == 202, answer.text
    _retry_after(await _post_message(api, tenant, "m6"), 60)
    assert len(await _history(api, tenant)) == 6


# --- several API processes ---


def _redis_reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "", parts.port or 6379), timeout=1):
            return True
    except OSError:
        return False


async def test_a_limit_counted_in_redis_holds_across_two_api_processes(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    time_env: WorkflowEnvironment,
    tenant: TenantKeys,
) -> None:
    if not _redis_reachable(REDIS_URL):
        pytest.skip(f"no Redis at {REDIS_URL}: the shared-storage test needs one")
    shared = settings.model_copy(
        update={"rate_limit_storage": REDIS_URL, "rate_limit_events": "4/minute"}
    )
    async with (
        api_client(shared, sessions, time_env.client) as first,
        api_client(shared, sessions, time_env.client) as second,
    ):
        await _contact(first, tenant)
        for n, api in enumerate((first, second, first, second)):
            answer = await _post_message(api, tenant, f"m{n}")
            assert answer.status_code == 202, answer.text
        # Four let through in all: each process refuses the fifth, though it saw only two.
        _retry_after(await _post_message(first, tenant, "m4"), 60)
        _retry_after(await _post_message(second, tenant, "m5"), 60)
        assert len(await _history(second, tenant)) == 4

    # Each process counting in its own memory would have let both through.
    alone = shared.model_copy(update={"rate_limit_storage": "memory://"})
    async with api_client(alone, sessions, time_env.client) as third:
        assert (await _post_message(third, tenant, "m6")).status_code == 202


async def test_a_storage_that_does_not_answer_lets_requests_through_counted(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    time_env: WorkflowEnvironment,
    tenant: TenantKeys,
) -> None:
    # Fail open: a Redis outage must not take the API down with it. Nothing listens on port 1.
    down = settings.model_copy(update={"rate_limit_storage": "redis://127.0.0.1:1"})
    unchecked = UNCHECKED["events"]
    async with api_client(down, sessions, time_env.client) as api:
        await _contact(api, tenant)
        for n in range(4):
            answer = await _post_message(api, tenant, f"m{n}")
            assert answer.status_code == 202, answer.text
    assert UNCHECKED["events"] == unchecked + 4


async def test_each_message_of_a_batch_counts_against_the_limit(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    await _contact(api, tenant)
    batch = {"events": [_message("b0"), _message("b1")]}
    answer = await api.post(
        "/v1/events/messages/batch", json=batch, headers=tenant.headers("service")
    )
    assert answer.status_code == 202, answer.text

    # One left in the window: a batch of two is over it, and none of it is stored.
    over = {"events": [_message("b2"), _message("b3")]}
    refused = await api.post(
        "/v1/events/messages/batch", json=over, headers=tenant.headers("service")
    )
    _retry_after(refused, 60)
    assert sorted(await _history(api, tenant)) == ["message b0", "message b1"]
