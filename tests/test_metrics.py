"""`/metrics` on the API and the worker: Nudge's counters, deliveries by channel type and
status from the database, and the Temporal SDK's own metrics, in one Prometheus scrape."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from nudge.api.app import create_app
from nudge.dev.ports import LOOPBACK, free_port
from nudge.metrics import RATE_LIMIT_REFUSALS
from nudge.models.db import create_engine, session_factory, transaction
from nudge.models.tables import Contact, Delivery
from nudge.settings import Settings
from nudge.workers.metrics_server import serve_metrics
from tests.conftest import TenantKeys
from tests.utils.waiting import eventually

ROOT = Path(__file__).resolve().parent.parent
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, by name and labels; the text must parse as Prometheus'."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


def has(samples: Samples, name: str, **labels: str) -> bool:
    wanted = set(labels.items())
    return any(n == name and wanted <= have for n, have in samples)


@asynccontextmanager
async def own_client_api(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], env: WorkflowEnvironment
) -> AsyncIterator[httpx.AsyncClient]:
    """The API as production starts it: it connects its own Temporal client."""
    target = env.client.service_client.config.target_host
    app = create_app(settings.model_copy(update={"temporal_address": target}), sessions=sessions)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://nudge.test") as client:
            yield client


@pytest.fixture
async def metrics_api(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], time_env: WorkflowEnvironment
) -> AsyncIterator[httpx.AsyncClient]:
    async with own_client_api(settings, sessions, time_env) as client:
        yield client


async def scrape(api: httpx.AsyncClient, **headers: str) -> Samples:
    answer = await api.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(answer.text)


async def _contact_and_log_channel(api: httpx.AsyncClient, tenant: TenantKeys) -> None:
    contact = await api.put("/v1/contacts/ada", json={"name": "Ada"}, headers=tenant.headers())
    assert contact.status_code == 200, contact.text
    channel = await api.put("/v1/channels/console", json={"type": "log"}, headers=tenant.headers())
    assert channel.status_code == 200, channel.text


# --- the API ---


async def test_the_api_shows_its_counters_and_the_sdk_metrics_of_its_client(
    metrics_api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    await _contact_and_log_channel(metrics_api, tenant)
    before = await scrape(metrics_api)
    # Nudge's counters are there from the start, at 0 for what has not happened yet.
    assert has(before, "nudge_events_accepted_total", kind="message", outcome="duplicate")
    assert has(before, "nudge_events_redelivered_total", kind="assignment")
    assert has(before, "nudge_outbox_relayed_total", by="relay", outcome="started")
    assert has(before, "nudge_rate_limit_refusals_total", scope="events")
    assert value(before, "nudge_database_up") == 1
    assert has(before, "process_resident_memory_bytes")

    # A send: the API's own client starts the run, and the SDK counts the request.
    sent = await metrics_api.post(
        "/v1/notifications",
        json={"contact_id": "ada", "channel": "console", "message": {"kind": "text", "text": "Hi"}},
        headers=tenant.headers("service"),
    )
    assert sent.status_code == 202, sent.text
    after = await scrape(metrics_api)
    start = {"operation": "StartWorkflowExecution", "namespace": "default"}
    assert value(after, "temporal_request_total", **start) >= 1 + value(
        before, "temporal_request_total", **start
    )
    assert value(after, "temporal_request_latency_seconds_count", **start) >= 1
    assert has(after, "temporal_request_latency_seconds_bucket", le="+Inf", **start)


async def test_deliveries_are_counted_by_channel_type_and_status_from_the_database(
    metrics_api: httpx.AsyncClient,
    tenant: TenantKeys,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await _contact_and_log_channel(metrics_api, tenant)
    before = await scrape(metrics_api)
    # Every status of a configured channel type has a series, at 0 until a row has it.
    assert has(before, "nudge_deliveries", channel="log", status="unknown")

    async with transaction(sessions) as session:
        contact_id = await _contact_id(session, tenant.id)
        for channel, status in (("console", "unknown"), ("console", "sent"), ("gone", "failed")):
            session.add(
                Delivery(
                    tenant_id=tenant.id,
                    idempotency_key=f"metrics-{uuid.uuid4().hex}",
                    contact_id=contact_id,
                    channel=channel,
                    status=status,
                    tries=1,
                )
            )

    after = await scrape(metrics_api)

    def added(**labels: str) -> float:
        return value(after, "nudge_deliveries", **labels) - value(
            before, "nudge_deliveries", **labels
        )

    assert added(channel="log", status="unknown") == 1
    assert added(channel="log", status="sent") == 1
    # A channel deleted since counts under `deleted`, never under the tenant's name for it.
    assert added(channel="deleted", status="failed") == 1
    assert not has(after, "nudge_deliveries", channel="console")


async def test_a_scrape_answers_without_the_database_when_it_is_down(
    settings: Settings, time_env: WorkflowEnvironment
) -> None:
    engine = create_engine(f"postgresql+psycopg://nudge@{LOOPBACK}:{free_port()}/nowhere")
    try:
        async with own_client_api(settings, session_factory(engine), time_env) as api:
            samples = await scrape(api)
    finally:
        await engine.dispose()
    assert value(samples, "nudge_database_up") == 0
    assert not has(samples, "nudge_deliveries")
    assert has(samples, "temporal_request_total", operation="GetSystemInfo")


async def _contact_id(session: AsyncSession, tenant_id: str) -> str:
    found = await session.scalar(
        select(Contact.id).where(Contact.tenant_id == tenant_id, Contact.external_id == "ada")
    )
    assert found is not None
    return found


async def test_a_rate_limit_refusal_is_counted(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    time_env: WorkflowEnvironment,
    tenant: TenantKeys,
) -> None:
    limited = settings.model_copy(
        update={"rate_limit_poll": "1/minute", "rate_limit_key_prefix": uuid.uuid4().hex}
    )
    async with own_client_api(limited, sessions, time_env) as api:
        before = await scrape(api)
        counted = RATE_LIMIT_REFUSALS.labels(scope="poll")._value.get()
        # The first poll-now of an unknown follow-up is let through (and answered 404) ...
        first = await api.post("/v1/followups/nope/poll", headers=tenant.headers())
        assert first.status_code == 404, first.text
        # ... the second is over the limit.
        second = await api.post("/v1/followups/nope/poll", headers=tenant.headers())
        assert second.status_code == 429, second.text
        after = await scrape(api)
    assert RATE_LIMIT_REFUSALS.labels(scope="poll")._value.get() == counted + 1
    refusals = "nudge_rate_limit_refusals_total"
    assert value(after, refusals, scope="poll") == value(before, refusals, scope="poll") + 1
    assert value(after, refusals, scope="events") == value(before, refusals, scope="events")


async def test_a_metrics_token_guards_the_api_endpoint(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], time_env: WorkflowEnvironment
) -> None:
    guarded = settings.model_copy(update={"metrics_token": SecretStr("scrape-me")})
    async with own_client_api(guarded, sessions, time_env) as api:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "scrape-me"}):
            refused = await api.get("/metrics", headers=headers)
            assert refused.status_code == 401, headers
            assert refused.headers["www-authenticate"] == "Bearer"
            assert "NUDGE_METRICS_TOKEN" in refused.json()["detail"]
        assert await scrape(api, Authorization="Bearer scrape-me")
        # An operator's endpoint, not the tenants' API: not in the OpenAPI document.
        assert "/metrics" not in (await api.get("/openapi.json")).json()["paths"]


def test_an_empty_token_is_no_token_and_the_worker_address_is_checked() -> None:
    assert Settings(metrics_token="  ").metrics_token is None
    assert Settings(worker_metrics_address="").worker_metrics_bind is None
    assert Settings(worker_metrics_address="0.0.0.0:9100").worker_metrics_bind == ("0.0.0.0", 9100)
    for wrong in ("9464", "host:", "host:http", "host:70000"):
        with pytest.raises(ValueError, match="host:port"):
            Settings(worker_metrics_address=wrong)


# --- the worker ---


@contextmanager
def worker_process(settings: Settings, env: WorkflowEnvironment, metrics: str) -> Iterator[None]:
    """`nudge worker` as production runs it, on this test's task queue."""
    target = env.client.service_client.config.target_host
    process = subprocess.Popen(
        [sys.executable, "-m", "nudge", "worker"],
        cwd=ROOT,
        env={
            **os.environ,
            "NUDGE_ENV": "test",
            "NUDGE_TEMPORAL_ADDRESS": target,
            "NUDGE_DATABASE_URL": str(settings.database_url),
            "NUDGE_SECRET_KEY": settings.secret_key_value(),
            "NUDGE_TASK_QUEUE": settings.task_queue,
            "NUDGE_DATA_DIR": str(settings.data_dir),
            "NUDGE_EGRESS_ALLOW": settings.egress_allow,
            "NUDGE_WORKER_METRICS_ADDRESS": metrics,
            "NUDGE_METRICS_TOKEN": "scrape-me",
        },
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, errors = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            _, errors = process.communicate()
        assert b"Traceback" not in errors, errors.decode(errors="replace")


async def test_the_worker_serves_the_sdk_metrics_of_the_runs_it_ran(
    settings: Settings,
    metrics_api: httpx.AsyncClient,
    tenant: TenantKeys,
    time_env: WorkflowEnvironment,
) -> None:
    port = free_port()
    url = f"http://{LOOPBACK}:{port}/metrics"
    await _contact_and_log_channel(metrics_api, tenant)
    with worker_process(settings, time_env, f"{LOOPBACK}:{port}"):
        sent = await metrics_api.post(
            "/v1/notifications",
            json={
                "contact_id": "ada",
                "channel": "console",
                "message": {"kind": "text", "text": "Hi"},
            },
            headers=tenant.headers("service"),
        )
        assert sent.status_code == 202, sent.text
        await time_env.client.get_workflow_handle(sent.json()["workflow_id"]).result()
        queue = {"task_queue": settings.task_queue}
        completed = {"workflow_type": "SendNotification", **queue}

        async with httpx.AsyncClient(timeout=5) as http:

            async def scraped() -> Samples:
                answer = await http.get(url, headers={"Authorization": "Bearer scrape-me"})
                assert answer.status_code == 200, answer.text
                samples = parse(answer.text)
                # The buffer is drained at each scrape: what the worker did is there at once.
                assert value(samples, "temporal_workflow_completed_total", **completed) == 1
                return samples

            samples = await eventually(scraped, timeout=30, message="the worker's /metrics")
            assert has(samples, "temporal_activity_execution_latency_seconds_bucket", **queue)
            assert has(samples, "nudge_outbox_relayed_total", by="relay", outcome="delivered")
            # The database's figures are the API's to report, once.
            assert not has(samples, "nudge_deliveries")

            refused = await http.get(url)
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"] == "Bearer"
            assert (await http.get(url.replace("/metrics", "/"))).status_code == 404
            assert (await http.post(url)).status_code == 405


async def test_a_busy_worker_metrics_port_leaves_the_worker_running_without_metrics(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve_metrics(
        settings.model_copy(update={"worker_metrics_address": f"{LOOPBACK}:0"})
    ) as first:
        assert first is not None
        busy = settings.model_copy(update={"worker_metrics_address": f"{LOOPBACK}:{first.port}"})
        async with serve_metrics(busy) as second:
            assert second is None
        assert "worker metrics off: cannot listen" in caplog.text
    async with serve_metrics(settings.model_copy(update={"worker_metrics_address": ""})) as off:
        assert off is None
