"""Campaigns end to end: a CSV uploaded, checked, sent on a fake provider at its pace,
paused, resumed and cancelled, with a real worker on the time-skipping server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from nudge.activities.campaign import CampaignActivities
from nudge.dev.fake_twilio import FakeTwilio
from nudge.models.tables import CampaignRow, Contact, Delivery, utcnow
from nudge.naming import campaign_workflow_id
from nudge.security import SecretBox
from nudge.settings import Settings
from nudge.workers.worker import activities_for, build_worker
from tests.conftest import TenantKeys
from tests.utils.delivery_runs import DiesAfterTheProviderTookIt
from tests.utils.egress import LOOPBACK, loopback_http
from tests.utils.receivers import free_port
from tests.utils.served import served_api
from tests.utils.waiting import eventually

CSV = (
    "phone;name;due\n+34600000001;Ada;1 Dec\n+34 600 000 002;Grace;2 Dec\n+34600000003;Lin;3 Dec\n"
)
TEXT = {"kind": "text", "text": "Hi {{ row.name }}, due {{ row.due }}"}


@pytest.fixture
def time_env(own_time_env: WorkflowEnvironment) -> WorkflowEnvironment:
    return own_time_env


@pytest.fixture
def api_port() -> int:
    return free_port()


@pytest.fixture
def settings(settings: Settings, api_port: int) -> Settings:
    return settings.model_copy(update={"public_url": f"http://127.0.0.1:{api_port}"})


@pytest.fixture
async def served(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    time_env: WorkflowEnvironment,
    api_port: int,
) -> AsyncIterator[str]:
    async with served_api(settings, sessions, time_env.client, api_port) as url:
        yield url


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        fake.auto_receipts = ("sent", "delivered")
        yield fake


async def sms(
    api: httpx.AsyncClient, tenant: TenantKeys, fake: FakeTwilio, slug: str = "sms"
) -> None:
    config = {
        "account_sid": fake.account_sid,
        "auth_token": fake.auth_token,
        "from": fake.numbers[0],
        "base_url": fake.base_url,
    }
    answer = await api.put(
        f"/v1/channels/{slug}", json={"type": "sms", "config": config}, headers=tenant.headers()
    )
    assert answer.status_code == 200, answer.text
    fake.inbound_url = answer.json()["webhook_url"]


async def create(
    api: httpx.AsyncClient, tenant: TenantKeys, csv: str = CSV, **campaign: Any
) -> httpx.Response:
    body = {
        "name": "Renewals",
        "separator": ";",
        "recipient_column": "phone",
        "channel": "sms",
        "message": TEXT,
        **campaign,
    }
    return await api.post(
        "/v1/campaigns",
        files={"file": ("renewals.csv", csv.encode(), "text/csv")},
        data={"campaign": json.dumps(body)},
        headers=tenant.headers(),
    )


async def campaign_in(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    campaign_id: str,
    status: str,
    timeout: float = 30,
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        answer = await api.get(f"/v1/campaigns/{campaign_id}", headers=tenant.headers())
        found: dict[str, Any] = answer.json()
        return found if found["status"] == status else None

    found: dict[str, Any] = await eventually(
        check, timeout=timeout, message=f"the campaign is {status}"
    )
    return found


@pytest.mark.usefixtures("worker", "served")
async def test_a_campaign_sends_every_row_once_with_its_values(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    twilio: FakeTwilio,
    time_env: WorkflowEnvironment,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await sms(api, tenant, twilio)
    answer = await create(api, tenant, CSV + "+34600000001;Ada again;4 Dec\n")
    assert answer.status_code == 201, answer.text
    created = answer.json()
    assert created["progress"]["total"] == 3 and created["progress"]["duplicates"] == 1

    done = await campaign_in(api, tenant, created["id"], "completed")

    assert done["progress"] | {"rate_per_second": None} == {
        "total": 3,
        "queued": 0,
        "sent": 3,
        "failed": 0,
        "unknown": 0,
        "skipped": 0,
        "duplicates": 1,
        "rate_per_second": None,
        "expected_end": None,
    }
    bodies = sorted((m.to, m.body) for m in twilio.sent)
    assert bodies == [
        ("+34600000001", "Hi Ada, due 1 Dec"),
        ("+34600000002", "Hi Grace, due 2 Dec"),
        ("+34600000003", "Hi Lin, due 3 Dec"),
    ]
    run = time_env.client.get_workflow_handle(campaign_workflow_id(tenant.slug, created["id"]))
    assert await run.result() == "Completed: 3 sent, 0 failed"
    described = await run.describe()
    assert described.search_attributes.get("NudgeCampaign") == [created["id"]]
    async with sessions() as session:
        contacts = await session.scalar(
            select(func.count()).select_from(Contact).where(Contact.tenant_id == tenant.id)
        )
        keys = (
            (
                await session.execute(
                    select(Delivery.idempotency_key).where(Delivery.tenant_id == tenant.id)
                )
            )
            .scalars()
            .all()
        )
    assert contacts == 3  # unknown numbers became contacts, once each
    assert sorted(keys) == [f"campaign:{created['id']}:{line}" for line in (2, 3, 4)]


async def test_a_bad_csv_is_a_422_by_line_and_column_and_stores_nothing(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    sessions: async_sessionmaker[AsyncSession],
    twilio: FakeTwilio,
) -> None:
    await sms(api, tenant, twilio)
    bad = "phone;name;due\n+34600000001;Ada;1 Dec\n+34 12;Grace;2 Dec\n+34600000003;;3 Dec\n"
    answer = await create(api, tenant, bad)
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["total"] == 2
    assert [(p["line"], p["column"]) for p in body["problems"]] == [(3, "phone"), (4, "name")]
    assert body["detail"][0]["loc"] == ["body", "file", 3, "phone"]
    async with sessions() as session:
        rows = await session.scalar(select(func.count()).select_from(CampaignRow))
        listed = await api.get("/v1/campaigns", headers=tenant.headers())
    assert listed.json()["items"] == []
    del rows

    wrong = await create(api, tenant, mode={"type": "gradual", "batch_size": 0, "every_minutes": 5})
    assert wrong.status_code == 422
    assert wrong.json()["detail"][0]["loc"] == ["body", "campaign", "mode", "batch_size"]
    unknown = await create(api, tenant, message={"kind": "text", "text": "{{ rows.name }}"})
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"][:3] == ["body", "campaign", "message"]


@pytest.mark.usefixtures("worker", "served")
async def test_a_scheduled_campaign_starts_at_its_time_and_can_be_cancelled_before(
    api: httpx.AsyncClient, tenant: TenantKeys, twilio: FakeTwilio, time_env: WorkflowEnvironment
) -> None:
    await sms(api, tenant, twilio)
    later = {"at": "2099-01-01T09:00:00", "timezone": "America/Sao_Paulo"}
    first = (await create(api, tenant, start=later)).json()
    second = (await create(api, tenant, start=later)).json()
    assert first["status"] == "scheduled"
    assert first["start_at"].startswith("2099-01-01T12:00:00")

    cancelled = await api.post(f"/v1/campaigns/{second['id']}/cancel", headers=tenant.headers())
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["progress"]["skipped"] == 3
    edited = await api.patch(
        f"/v1/campaigns/{first['id']}", json={"start": "now"}, headers=tenant.headers()
    )
    assert edited.status_code == 200, edited.text

    await campaign_in(api, tenant, first["id"], "completed")
    second_run = time_env.client.get_workflow_handle(
        campaign_workflow_id(tenant.slug, second["id"])
    )
    assert await second_run.result() == "Cancelled: 0 sent, 0 failed"
    assert len(twilio.sent) == 3
    late_edit = await api.patch(
        f"/v1/campaigns/{first['id']}", json={"name": "x"}, headers=tenant.headers()
    )
    assert late_edit.status_code == 409


@pytest.mark.usefixtures("worker", "served")
async def test_a_paused_campaign_sends_nothing_until_resumed(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    twilio: FakeTwilio,
    time_env: WorkflowEnvironment,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await sms(api, tenant, twilio)
    rows = "phone;name;due\n" + "".join(f"+346000{n:05d};N{n};d\n" for n in range(40))
    created = (await create(api, tenant, rows, mode={"type": "rate", "per_second": 4})).json()
    await asyncio.to_thread(twilio.wait_for, 2)

    paused = await api.post(f"/v1/campaigns/{created['id']}/pause", headers=tenant.headers())
    acknowledged = utcnow()
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    run = time_env.client.get_workflow_handle(campaign_workflow_id(tenant.slug, created["id"]))

    async def idle() -> bool:
        described = await run.describe()
        return not described.raw_description.pending_activities

    await eventually(idle, message="the run stops sending")
    async with sessions() as session:
        claimed = (
            (
                await session.execute(
                    select(Delivery.created_at).where(Delivery.tenant_id == tenant.id)
                )
            )
            .scalars()
            .all()
        )
    # Every send was claimed (which comes before calling the provider) before the answer.
    assert claimed and max(claimed) <= acknowledged
    stopped_at = len(claimed)

    resumed = await api.post(f"/v1/campaigns/{created['id']}/resume", headers=tenant.headers())
    assert resumed.json()["status"] == "running"
    done = await campaign_in(api, tenant, created["id"], "completed")
    assert done["progress"]["sent"] == 40
    assert len({m.to for m in twilio.sent}) == 40 and len(twilio.sent) == 40
    assert stopped_at < 40


@pytest.mark.usefixtures("worker", "served")
async def test_a_provider_that_asks_to_slow_down_delays_rows_instead_of_failing_them(
    api: httpx.AsyncClient, tenant: TenantKeys, twilio: FakeTwilio, time_env: WorkflowEnvironment
) -> None:
    await sms(api, tenant, twilio)
    twilio.fail_next(429, 20429, "Too Many Requests", count=2)
    created = (await create(api, tenant)).json()
    done = await campaign_in(api, tenant, created["id"], "completed")
    assert done["progress"]["sent"] == 3 and done["progress"]["failed"] == 0
    assert len(twilio.sent) == 3


@pytest.mark.usefixtures("worker", "served")
async def test_metrics_count_the_receipts_and_the_reply_a_campaign_got(
    api: httpx.AsyncClient, tenant: TenantKeys, twilio: FakeTwilio
) -> None:
    twilio.auto_receipts = ("sent", "delivered", "read")
    await sms(api, tenant, twilio)
    created = (await create(api, tenant)).json()
    await campaign_in(api, tenant, created["id"], "completed")
    answer, _sid = await asyncio.to_thread(twilio.send_sms, "+34600000002", "Renewed, thanks")
    assert answer.status_code == 200

    async def counted() -> dict[str, Any] | None:
        got = await api.get(f"/v1/campaigns/{created['id']}/metrics", headers=tenant.headers())
        metrics: dict[str, Any] = got.json()
        return metrics if metrics["read"] == 3 and metrics["replied"] == 1 else None

    metrics = await eventually(counted, message="the receipts and the reply are counted")
    assert metrics == {
        "total": 3, "sent": 3, "delivered": 3, "read": 3, "failed": 0, "replied": 1,
        "reply_rate": 0.3333,
    }  # fmt: skip
    results = await api.get(f"/v1/campaigns/{created['id']}/results.csv", headers=tenant.headers())
    lines = results.text.splitlines()
    assert len(lines) == 4 and lines[0].startswith("line,recipient,")
    assert "+34600000002" in lines[2] and lines[2].split(",")[9] != ""  # replied_at


async def test_a_worker_killed_after_the_provider_took_a_row_never_sends_it_twice(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    twilio: FakeTwilio,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    box: SecretBox,
    time_env: WorkflowEnvironment,
    served: str,
) -> None:
    await sms(api, tenant, twilio)
    async with loopback_http() as http:
        dying = DiesAfterTheProviderTookIt(sessions, box, http, LOOPBACK)
        DiesAfterTheProviderTookIt.deaths = 0
        campaign_activities = CampaignActivities(sessions, dying)
        activities = [
            a
            for a in activities_for(settings, sessions, box, http)
            if a.__name__ not in {"load_plan", "move", "send_batch"}
        ]
        activities += [
            campaign_activities.load_plan,
            campaign_activities.move,
            campaign_activities.send_batch,
        ]
        async with build_worker(time_env.client, settings.task_queue, activities):
            created = (await create(api, tenant)).json()
            done = await campaign_in(api, tenant, created["id"], "completed")

    # A row whose try was in flight when its worker died is `unknown` (Twilio cannot drop a
    # copy), never sent again on its own; every recipient got the message exactly once.
    progress = done["progress"]
    assert progress["sent"] + progress["unknown"] == 3 and progress["unknown"] >= 1
    assert sorted(m.to for m in twilio.sent) == ["+34600000001", "+34600000002", "+34600000003"]
