"""Send windows: a follow-up reminder or a journey message due outside its window waits on
a timer until it opens (never dropped), and a stop still ends the waiting run at once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from tests.conftest import TenantKeys
from tests.utils.delivery_runs import current_details, record_run, result_of
from tests.utils.followups import followup_definition
from tests.utils.histories import scheduled
from tests.utils.journeys import create, enroll, run_of, send, setup_contact
from tests.utils.receivers import WebhookReceiver
from tests.utils.waiting import eventually, received

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
TICKET = {
    "number": "INC0012",
    "short_description": "New laptop",
    "approver": {"email": "ada@example.com"},
}


@pytest.fixture
def time_env(own_time_env: WorkflowEnvironment) -> WorkflowEnvironment:
    return own_time_env


@pytest.fixture
def itsm() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        server.serve_json("/api/tickets", {"result": [TICKET]})
        yield server


def in_two_days() -> str:
    return DAYS[(datetime.now(UTC).weekday() + 2) % 7]


async def office(api: httpx.AsyncClient, tenant: TenantKeys) -> None:
    body = {"timezone": "UTC", "week": {in_two_days(): ["09:00-17:00"]}}
    answer = await api.put("/v1/business-hours/office", json=body, headers=tenant.headers())
    assert answer.status_code == 200, answer.text


async def waiting_for_hours(handle: WorkflowHandle[Any, Any]) -> str:
    async def check() -> str | None:
        try:
            details = await current_details(handle)
        except Exception:
            return None
        return details if "waiting for business hours" in details else None

    found: str = await eventually(check, message="the run waits for business hours")
    return found


async def followup(api: httpx.AsyncClient, tenant: TenantKeys, itsm: WebhookReceiver) -> Any:
    await api.put("/v1/secrets/ITSM_TOKEN", json={"value": "t"}, headers=tenant.headers())
    definition = followup_definition(
        itsm.base_url,
        channel="hook",
        recipients={"user": {"source": "approver.email", "match_on": "email"}},
        schedule={"notify_minutes": 60, "attempts": 2, "send_window": {"business_hours": "office"}},
    )
    answer = await api.post("/v1/followups", json=definition, headers=tenant.headers())
    assert answer.status_code == 201, answer.text
    return answer.json()


@pytest.mark.usefixtures("worker")
async def test_a_reminder_due_at_night_waits_for_the_office_to_open(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    itsm: WebhookReceiver,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await setup_contact(api, tenant, webhook_receiver)
    await api.put(
        "/v1/contacts/ada",
        json={"name": "Ada", "email": "ada@example.com"},
        headers=tenant.headers(),
    )
    await office(api, tenant)
    created = await followup(api, tenant, itsm)
    run = record_run(time_env.client, tenant, created)

    details = await waiting_for_hours(run)
    assert (
        details
        == f"Attempt 1 of 2: waiting for business hours: opens {in_two_days().capitalize()} 09:00 UTC"
    )
    assert await scheduled(run, "run_attempt") == []  # held, not sent and not dropped

    await time_env.sleep(timedelta(days=2))
    reminders = await received(webhook_receiver, 1)
    assert reminders[0].json["source"]["attempt"] == 1


@pytest.mark.usefixtures("worker")
async def test_a_stop_ends_a_run_waiting_for_its_window_at_once(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    itsm: WebhookReceiver,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await setup_contact(api, tenant, webhook_receiver)
    await api.put(
        "/v1/contacts/ada",
        json={"name": "Ada", "email": "ada@example.com"},
        headers=tenant.headers(),
    )
    await office(api, tenant)
    created = await followup(api, tenant, itsm)
    run = record_run(time_env.client, tenant, created)
    await waiting_for_hours(run)

    stopped = await api.post(
        f"/v1/followups/{created['id']}/records/INC0012/stop", headers=tenant.headers()
    )
    assert stopped.status_code == 202, stopped.text
    assert await result_of(run) == "stopped"
    assert await scheduled(run, "run_attempt") == []


@pytest.mark.usefixtures("worker")
async def test_a_journey_message_waits_for_the_recipients_local_hours(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await setup_contact(api, tenant, webhook_receiver)
    answer = await api.put(
        "/v1/contacts/ada",
        json={"name": "Ada", "timezone": "Europe/Madrid"},
        headers=tenant.headers(),
    )
    assert answer.status_code == 200
    window = {"recipient_local": {"days": [in_two_days()], "hours": "09:00-18:00"}}
    journey = await create(
        api,
        tenant,
        {
            "name": "Renewal",
            "trigger": {"type": "api"},
            "settings": {},
            "steps": [send("greet", "Good morning {{ contact.name }}", send_window=window)],
        },
    )
    assert (await enroll(api, tenant, journey["id"])).status_code == 201
    run = run_of(time_env, tenant, journey["id"])

    details = await waiting_for_hours(run)
    assert details.endswith(f"opens {in_two_days().capitalize()} 09:00 Europe/Madrid")
    assert await scheduled(run, "send_journey_message") == []

    await time_env.sleep(timedelta(days=2, hours=1))
    (message,) = await received(webhook_receiver, 1)
    assert message.json["message"]["text"] == "Good morning Ada"


async def test_a_send_window_must_name_one_kind(
    api: httpx.AsyncClient, tenant: TenantKeys, itsm: WebhookReceiver
) -> None:
    definition = followup_definition(
        itsm.base_url,
        schedule={
            "notify_minutes": 60,
            "attempts": 1,
            "send_window": {
                "business_hours": "office",
                "recipient_local": {"hours": "09:00-18:00"},
            },
        },
    )
    answer = await api.post("/v1/followups", json=definition, headers=tenant.headers())
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "schedule", "send_window"]
