"""Follow-ups end to end on the time-skipping server: poll a real ITSM, remind, stop.

The ITSM is a real HTTP server on 127.0.0.1; reminders go to a real webhook receiver.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from nudge.models.payloads import PollInput
from nudge.naming import FOLLOWUP, KIND, RECORD, TENANT
from tests.conftest import TenantKeys, problems
from tests.utils.egress import loopback_http
from tests.utils.followups import REMOVE, followup_definition
from tests.utils.histories import keep_history, scheduled
from tests.utils.outage import pending, relay_all
from tests.utils.receivers import WebhookReceiver
from tests.utils.waiting import eventually, received

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture
def time_env(own_time_env: WorkflowEnvironment) -> WorkflowEnvironment:
    """Pollers run forever: a leftover one would stop the shared server from skipping time."""
    return own_time_env


TICKET = {
    "number": "INC0012",
    "short_description": "New laptop",
    "approver": {"email": "ada@example.com"},
}


@pytest.fixture
def itsm() -> Iterator[WebhookReceiver]:
    """A sample ITSM: GET /api/tickets lists what is pending; POSTs are recorded."""
    with WebhookReceiver() as server:
        server.serve_json("/api/tickets", {"result": [TICKET]})
        yield server


# The attempt counter in the title: what each reminder says of the schedule.
COUNTED = {
    "card": {
        "title": "Approval needed: {{ followup.data.number }} ({{ followup.attempt }}/{{ followup.attempts }})"
    }
}


def definition(itsm: WebhookReceiver, **overrides: Any) -> dict[str, Any]:
    """The shared approval follow-up, polling this module's sample ITSM, reminding on `ops`."""
    return followup_definition(itsm.base_url, **{"channel": "ops", **overrides})


async def setup_tenant(api: httpx.AsyncClient, tenant: TenantKeys, hook: WebhookReceiver) -> None:
    admin = tenant.headers()
    await api.put(
        "/v1/contacts/ada", json={"name": "Ada", "email": "ada@example.com"}, headers=admin
    )
    await api.put(
        "/v1/channels/ops", json={"type": "webhook", "config": {"url": hook.url}}, headers=admin
    )
    await api.put("/v1/secrets/ITSM_TOKEN", json={"value": "itsm-s3cret"}, headers=admin)


async def create(
    api: httpx.AsyncClient, tenant: TenantKeys, body: dict[str, Any]
) -> dict[str, Any]:
    response = await api.post("/v1/followups", json=body, headers=tenant.headers())
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def reminders(hook: WebhookReceiver, count: int) -> list[dict[str, Any]]:
    """Every reminder received, once ``count`` have arrived."""
    return [r.json for r in await received(hook, count)]


def record_run(
    env: WorkflowEnvironment, tenant: TenantKeys, followup: dict[str, Any], rid: str = "INC0012"
) -> WorkflowHandle[Any, Any]:
    return env.client.get_workflow_handle(f"followup/{tenant.slug}/{followup['id']}/record/{rid}")


async def stored_messages(api: httpx.AsyncClient, tenant: TenantKeys) -> list[dict[str, Any]]:
    """Ada's conversation history as stored: what was delivered to her, and her replies."""
    answer = await api.get("/v1/contacts/ada/messages", headers=tenant.headers())
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


async def first_record(api: httpx.AsyncClient, tenant: TenantKeys, followup_id: str) -> Any:
    listed = (
        await api.get(f"/v1/followups/{followup_id}/records", headers=tenant.headers())
    ).json()["items"]
    return listed[0] if listed else None


async def record(
    api: httpx.AsyncClient, tenant: TenantKeys, followup_id: str, **expected: Any
) -> dict[str, Any]:
    """The follow-up's only record, once its fields have the ``expected`` values."""

    async def reached() -> Any:
        found = await first_record(api, tenant, followup_id)
        return found if found and all(found[k] == v for k, v in expected.items()) else None

    found: dict[str, Any] = await eventually(reached, message=f"the record has {expected}")
    return found


def posts_to(itsm: WebhookReceiver, suffix: str) -> list[str]:
    return [r.path for r in itsm.requests if r.method == "POST" and r.path.endswith(suffix)]


async def test_reminds_on_schedule_then_runs_the_after_all_actions(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    itsm: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await setup_tenant(api, tenant, webhook_receiver)
    followup = await create(api, tenant, definition(itsm, message=COUNTED))

    [first] = await reminders(webhook_receiver, 1)
    assert first["message"]["card"]["title"] == "Approval needed: INC0012 (1/3)"
    assert first["recipient"]["external_id"] == "ada"
    assert first["source"] == {
        "type": "followup",
        "followup_id": followup["id"],
        "reconciliation_id": "INC0012",
        "attempt": 1,
        "attempts": 3,
        "generation": 1,
    }
    tickets_call = next(r for r in itsm.requests if r.method == "GET")
    assert tickets_call.headers["authorization"] == "Bearer itsm-s3cret"
    await record(api, tenant, followup["id"], attempts_made=1)

    await time_env.sleep(timedelta(minutes=61))
    await reminders(webhook_receiver, 2)
    await time_env.sleep(timedelta(minutes=61))
    sent = await reminders(webhook_receiver, 3)
    assert [m["source"]["attempt"] for m in sent] == [1, 2, 3]
    assert len({m["idempotency_key"] for m in sent}) == 3

    done = await record(api, tenant, followup["id"], state="completed")
    assert done["attempts_made"] == 3
    assert done["ended_by"] == "schedule"
    assert posts_to(itsm, "/api/tickets/INC0012/escalate") == ["/api/tickets/INC0012/escalate"]
    run = record_run(time_env, tenant, followup)
    assert await run.result() == "completed"
    assert await scheduled(run, "run_attempt") == ["completed"] * 3
    assert await scheduled(run, "run_actions") == ["completed"]  # after_all_attempts, once
    await keep_history(run, "followup-record-completed")
    assert len(await stored_messages(api, tenant)) == 3


async def test_a_record_that_disappears_gets_no_further_message(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    itsm: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await setup_tenant(api, tenant, webhook_receiver)
    followup = await create(api, tenant, definition(itsm))
    await reminders(webhook_receiver, 1)

    itsm.serve_json("/api/tickets", {"result": []})
    await time_env.sleep(timedelta(minutes=11))
    resolved = await record(api, tenant, followup["id"], state="resolved")
    assert resolved["ended_by"] == "poll"
    # Past the time of attempt 2: a run that had gone on would show it in its history.
    await time_env.sleep(timedelta(minutes=61))
    run = record_run(time_env, tenant, followup)
    assert await scheduled(run, "run_attempt") == ["completed"]
    assert await scheduled(run, "run_actions") == []  # no after_all_attempts either
    assert await run.result() == "resolved"
    assert len(await stored_messages(api, tenant)) == 1
    assert len(webhook_receiver.requests) == 1
    assert posts_to(itsm, "/escalate") == []


async def test_approve_pressed_calls_the_itsm_and_stops_the_reminders(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    itsm: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await setup_tenant(api, tenant, webhook_receiver)
    followup = await create(api, tenant, definition(itsm))
    [card] = await reminders(webhook_receiver, 1)
    approve = next(b for b in card["message"]["card"]["buttons"] if b["action"] == "approve")
    path = urlparse(approve["url"]).path
    assert path.startswith("/v1/actions/")

    assert (await api.get(path)).status_code == 200  # the confirmation page presses nothing
    assert posts_to(itsm, "/approve") == []
    pressed = await api.post(path)
    assert pressed.status_code == 200, pressed.text
    assert pressed.json()["action"] == "approve"

    done = await record(api, tenant, followup["id"], state="completed")
    assert done["ended_by"] == "contact ada"
    assert posts_to(itsm, "/api/tickets/INC0012/approve") == ["/api/tickets/INC0012/approve"]
    # Past the time of attempt 2: a run that had gone on would show it in its history.
    await time_env.sleep(timedelta(minutes=61))
    run = record_run(time_env, tenant, followup)
    assert await scheduled(run, "run_attempt") == ["completed"]
    assert await scheduled(run, "run_actions") == ["completed"]  # the button's, not after_all
    assert await run.result() == "completed"
    assert len(await stored_messages(api, tenant)) == 1
    assert len(webhook_receiver.requests) == 1
    assert posts_to(itsm, "/escalate") == []
    assert (await api.post(path)).status_code == 409  # a second press finds it ended
    forged = path[:-3] + ("abc" if not path.endswith("abc") else "xyz")
    assert (await api.post(forged)).status_code == 404


async def test_a_record_stopped_by_api_sends_nothing_more_and_says_who(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    itsm: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await setup_tenant(api, tenant, webhook_receiver)
    followup = await create(api, tenant, definition(itsm))
    await reminders(webhook_receiver, 1)
    stopped = await api.post(
        f"/v1/followups/{followup['id']}/records/INC0012/stop",
        json={"reason": "handled by phone"},
        headers=tenant.headers(),
    )
    assert stopped.status_code == 202, stopped.text
    assert (stopped.json()["state"], stopped.json()["end_reason"]) == (
        "stopped",
        "handled by phone",
    )

    # Past the time of attempt 2: a run that had gone on would show it in its history.
    await time_env.sleep(timedelta(minutes=61))
    run = record_run(time_env, tenant, followup)
    assert await scheduled(run, "run_attempt") == ["completed"]
    assert await scheduled(run, "run_actions") == []
    assert await run.result() == "stopped"
    assert len(await stored_messages(api, tenant)) == 1
    assert len(webhook_receiver.requests) == 1
    final = await record(api, tenant, followup["id"])
    assert (final["state"], final["ended_by"]) == ("stopped", "admin API key")
    assert "Ended (stopped) by admin API key: handled by phone" in await current_details(run)
    await keep_history(run, "followup-record-stopped")
    again = await api.post(
        f"/v1/followups/{followup['id']}/records/INC0012/stop", json={}, headers=tenant.headers()
    )
    assert again.status_code == 409


async def test_deactivation_stops_the_poller_and_every_record(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    itsm: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await setup_tenant(api, tenant, webhook_receiver)
    followup = await create(api, tenant, definition(itsm))
    await reminders(webhook_receiver, 1)
    handle = time_env.client.get_workflow_handle(f"followup/{tenant.slug}/{followup['id']}")
    description = await handle.describe()
    assert description.typed_search_attributes.get(KIND) == "followup"
    assert description.typed_search_attributes.get(FOLLOWUP) == followup["id"]

    answer = await api.post(f"/v1/followups/{followup['id']}/deactivate", headers=tenant.headers())
    assert answer.json()["status"] == "inactive"
    assert "stopped by admin API key" in await handle.result()
    await keep_history(handle, "followup-poller-stopped")
    stopped = await record(api, tenant, followup["id"], state="stopped")
    assert stopped["end_reason"] == "follow-up deactivated"
    # Both runs have closed: what their histories hold is all they ever did.
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    assert await scheduled(handle, "stop_followup_records") == ["completed"]
    polls = await scheduled(handle, "poll_followup")
    assert len([r for r in itsm.requests if r.method == "GET"]) == len(polls)
    run = record_run(time_env, tenant, followup)
    assert await run.result() == "stopped"
    assert await scheduled(run, "run_attempt") == ["completed"]
    assert len(await stored_messages(api, tenant)) == 1
    assert len(webhook_receiver.requests) == 1


async def test_poll_now_while_temporal_is_down_asks_to_retry(
    api: httpx.AsyncClient,
    temporal_down: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    itsm: WebhookReceiver,
) -> None:
    """Poll-now is told to the poller directly (it stores nothing): with Temporal down the
    client gets a 503 to retry, not a bare 500."""
    await setup_tenant(api, tenant, webhook_receiver)
    followup = await create(api, tenant, definition(itsm))
    answer = await temporal_down.post(
        f"/v1/followups/{followup['id']}/poll", headers=tenant.headers()
    )
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == "5"
    assert "Temporal is unreachable" in answer.json()["detail"]


async def test_a_deactivation_while_temporal_is_down_stops_the_runs_once_it_is_back(
    api: httpx.AsyncClient,
    temporal_down: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    itsm: WebhookReceiver,
    time_env: WorkflowEnvironment,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await setup_tenant(api, tenant, webhook_receiver)
    followup = await create(api, tenant, definition(itsm))
    await reminders(webhook_receiver, 1)
    handle = time_env.client.get_workflow_handle(f"followup/{tenant.slug}/{followup['id']}")

    answer = await temporal_down.post(
        f"/v1/followups/{followup['id']}/deactivate", headers=tenant.headers()
    )
    assert answer.json()["status"] == "inactive"
    # The database holds the stop at once (each attempt checks it before it sends) ...
    stopped = await first_record(api, tenant, followup["id"])
    assert (stopped["state"], stopped["end_reason"]) == ("stopped", "follow-up deactivated")
    # ... and the poller's and the record run's stops wait for Temporal in the outbox.
    assert await pending(sessions, tenant) == 2
    await relay_all(time_env.client, sessions, tenant)
    assert "stopped by admin API key" in await handle.result()
    record_run = time_env.client.get_workflow_handle(
        f"followup/{tenant.slug}/{followup['id']}/record/{stopped['reconciliation_id']}"
    )
    assert await record_run.result() == "stopped"


async def test_a_reply_ends_the_follow_up_when_the_definition_says_so(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    itsm: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await setup_tenant(api, tenant, webhook_receiver)
    followup = await create(
        api, tenant, definition(itsm, exit={"on_record_resolved": True, "on_reply": True})
    )
    await reminders(webhook_receiver, 1)
    await record(api, tenant, followup["id"], attempts_made=1)
    event = {
        "contact_id": "ada",
        "direction": "incoming",
        "channel": "ops",
        "text": "done",
        "message_id": "m-1",
    }
    assert (
        await api.post("/v1/events/messages", json=event, headers=tenant.headers("service"))
    ).status_code == 202
    duplicate = await api.post("/v1/events/messages", json=event, headers=tenant.headers("service"))
    assert duplicate.json()["status"] == "duplicate"
    ended = await record(api, tenant, followup["id"], state="completed")
    assert (ended["ended_by"], ended["end_reason"]) == ("contact ada", "replied")
    # Past the time of attempt 2: a run that had gone on would show it in its history.
    await time_env.sleep(timedelta(minutes=61))
    run = record_run(time_env, tenant, followup)
    assert await scheduled(run, "run_attempt") == ["completed"]
    assert await scheduled(run, "run_actions") == []  # a reply is no reason to escalate
    assert await run.result() == "completed"
    assert [m["direction"] for m in await stored_messages(api, tenant)] == [
        "incoming",
        "outgoing",
    ]
    assert len(webhook_receiver.requests) == 1


async def test_record_runs_are_findable_by_ticket(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    itsm: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await setup_tenant(api, tenant, webhook_receiver)
    followup = await create(api, tenant, definition(itsm))
    await reminders(webhook_receiver, 1)
    handle = record_run(time_env, tenant, followup)
    description = await handle.describe()
    attributes = description.typed_search_attributes
    assert (attributes.get(TENANT), attributes.get(KIND), attributes.get(RECORD)) == (
        tenant.slug,
        "followup-record",
        "INC0012",
    )
    assert await description.static_summary() == "Tickets pending approval · INC0012"
    await eventually(
        lambda: details_say(handle, "Attempt 1 of 3 sent; next at"),
        message="the record run says when its next attempt is",
    )
    assert "itsm-s3cret" not in str(await handle.fetch_history())


async def test_a_retried_poll_starts_nothing_twice(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    itsm: WebhookReceiver,
    time_env: WorkflowEnvironment,
    settings: Any,
    sessions: Any,
    box: Any,
) -> None:
    from nudge.workers.worker import activities_for

    await setup_tenant(api, tenant, webhook_receiver)
    followup = await create(api, tenant, definition(itsm, status="inactive"))
    await api.post(f"/v1/followups/{followup['id']}/activate", headers=tenant.headers())
    await reminders(webhook_receiver, 1)
    run = record_run(time_env, tenant, followup)
    first_run = (await run.describe()).run_id
    async with loopback_http() as http:
        poll = next(
            a
            for a in activities_for(settings, sessions, box, http)
            if a.__name__ == "poll_followup"
        )
        env = ActivityEnvironment(client=time_env.client)
        request = PollInput(tenant_id=tenant.id, tenant=tenant.slug, followup_id=followup["id"])
        for _ in range(2):
            result = await env.run(poll, request)
            assert (result.found, result.new) == (1, 0)
    # The one record, still on the run the first poll started and at its first attempt.
    listed = await record(api, tenant, followup["id"], attempts_made=1)
    assert listed["state"] == "following"
    assert (await run.describe()).run_id == first_run
    assert await scheduled(run, "run_attempt") == ["completed"]
    assert len(webhook_receiver.requests) == 1


async def test_bad_definitions_are_refused_naming_the_field(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    itsm: WebhookReceiver,
) -> None:
    admin = tenant.headers()
    await api.put(
        "/v1/channels/ops",
        json={"type": "webhook", "config": {"url": webhook_receiver.url}},
        headers=admin,
    )
    missing_secret = await api.post("/v1/followups", json=definition(itsm), headers=admin)
    assert problems(missing_secret) == {
        "body.data_extraction.integrations.0.headers.Authorization": "no secret 'ITSM_TOKEN'; create it with PUT /v1/secrets/ITSM_TOKEN"
    }
    unknown_channel = definition(itsm, channel="pager")
    unknown_channel["data_extraction"]["integrations"][0]["headers"] = {}
    assert problems(await api.post("/v1/followups", json=unknown_channel, headers=admin)) == {
        "body.channel": "no channel 'pager'"
    }

    too_often = copy.deepcopy(unknown_channel)
    too_often["data_extraction"]["polling_minutes"] = 5
    too_often["schedule"]["attempts"] = 11
    too_often["data_extraction"]["looping_element"] = "tickets.[result"
    fields = problems(await api.post("/v1/followups", json=too_often, headers=admin))
    assert {
        "body.data_extraction.polling_minutes",
        "body.schedule.attempts",
        "body.data_extraction.looping_element",
    } <= set(fields)
    assert (await api.get("/v1/followups", headers=admin)).json()["items"] == []


async def test_a_follow_up_of_one_tenant_is_invisible_to_another(
    api: httpx.AsyncClient,
    make_tenant: Any,
    webhook_receiver: WebhookReceiver,
    itsm: WebhookReceiver,
) -> None:
    acme, globex = await make_tenant(), await make_tenant()
    await setup_tenant(api, acme, webhook_receiver)
    followup = await create(api, acme, definition(itsm, status="inactive"))
    for method, path in (
        ("GET", f"/v1/followups/{followup['id']}"),
        ("GET", f"/v1/followups/{followup['id']}/records"),
        ("POST", f"/v1/followups/{followup['id']}/activate"),
        ("DELETE", f"/v1/followups/{followup['id']}"),
    ):
        assert (await api.request(method, path, headers=globex.headers())).status_code == 404, path
    assert (await api.get("/v1/followups", headers=globex.headers())).json()["items"] == []
    assert (
        await api.get(f"/v1/followups/{followup['id']}", headers=acme.headers())
    ).status_code == 200


async def test_every_update_is_a_new_version_and_copies_keep_the_status(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    itsm: WebhookReceiver,
) -> None:
    await setup_tenant(api, tenant, webhook_receiver)
    followup = await create(api, tenant, definition(itsm, status="inactive"))
    assert followup["version"] == 1
    changed = definition(itsm, status="inactive", name="Renamed")
    updated = await api.put(
        f"/v1/followups/{followup['id']}", json=changed, headers=tenant.headers()
    )
    assert (updated.json()["version"], updated.json()["name"]) == (2, "Renamed")
    copied = await api.post(
        f"/v1/followups/{followup['id']}/copy", json={"name": "Copy"}, headers=tenant.headers()
    )
    assert copied.status_code == 201
    assert (copied.json()["name"], copied.json()["status"], copied.json()["version"]) == (
        "Copy",
        "inactive",
        1,
    )
    assert copied.json()["id"] != followup["id"]
    assert (
        await api.delete(f"/v1/followups/{followup['id']}", headers=tenant.headers())
    ).status_code == 204
    assert (
        await api.get(f"/v1/followups/{followup['id']}", headers=tenant.headers())
    ).status_code == 404


async def test_the_poller_continues_as_new_and_keeps_polling(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    itsm: WebhookReceiver,
    time_env: WorkflowEnvironment,
    settings: Any,
    sessions: Any,
) -> None:
    from sqlalchemy import update

    from nudge.models.payloads import PollerInput
    from nudge.models.tables import FollowUp
    from nudge.workflows.followup_poller import FollowUpPollerWorkflow

    await setup_tenant(api, tenant, webhook_receiver)
    followup = await create(api, tenant, definition(itsm, status="inactive"))
    # Active in the database, with the poller started here under a lowered limit.
    async with sessions() as session, session.begin():
        await session.execute(
            update(FollowUp).where(FollowUp.id == followup["id"]).values(status="active")
        )
    workflow_id = f"followup/{tenant.slug}/{followup['id']}"
    handle = await time_env.client.start_workflow(
        FollowUpPollerWorkflow.run,
        PollerInput(
            tenant_id=tenant.id, tenant=tenant.slug, followup_id=followup["id"], polls_per_run=2
        ),
        id=workflow_id,
        task_queue=settings.task_queue,
    )
    first_run = handle.first_execution_run_id
    await reminders(webhook_receiver, 1)
    run = record_run(time_env, tenant, followup)
    first_record_run = (await run.describe()).run_id
    await time_env.sleep(timedelta(minutes=45))
    await eventually(
        lambda: len([r for r in itsm.requests if r.method == "GET"]) >= 5,
        message="the poller keeps polling (5 polls in 45 minutes)",
    )
    description = await time_env.client.get_workflow_handle(workflow_id).describe()
    assert description.run_id != first_run
    assert description.status == WorkflowExecutionStatus.RUNNING
    # The record run was not started again: the same run, at its first attempt (of 60 min).
    assert (await run.describe()).run_id == first_record_run
    assert await scheduled(run, "run_attempt") == ["completed"]
    assert len(webhook_receiver.requests) == 1


async def test_a_failed_poll_is_reported_and_leaves_the_records_alone(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    itsm: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await setup_tenant(api, tenant, webhook_receiver)
    followup = await create(api, tenant, definition(itsm))
    await reminders(webhook_receiver, 1)
    itsm.serve_json("/api/tickets", {"error": "token expired"}, status=401)
    await time_env.sleep(timedelta(minutes=11))

    async def last_poll() -> dict[str, Any]:
        body = (await api.get(f"/v1/followups/{followup['id']}", headers=tenant.headers())).json()
        report: dict[str, Any] = body["last_poll"] or {}
        return report

    async def failed() -> Any:
        report = await last_poll()
        return report if "error" in report else None

    report = await eventually(failed, message="the failed poll is reported")
    assert "HTTP 401" in report["error"]
    assert "itsm-s3cret" not in report["error"]
    still = await record(api, tenant, followup["id"])
    assert still["state"] == "following"
    handle = time_env.client.get_workflow_handle(f"followup/{tenant.slug}/{followup['id']}")
    await eventually(
        lambda: details_say(handle, "Last poll failed"),
        message="the poller says its last poll failed",
    )


async def current_details(handle: Any) -> str:
    """What the run says it is doing (the Temporal UI shows the same)."""
    from temporalio.api.sdk.v1 import WorkflowMetadata

    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return str(metadata.current_details)


async def details_say(handle: Any, text: str) -> bool:
    return text in await current_details(handle)


async def test_records_without_an_id_are_skipped_and_reported(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    itsm: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await setup_tenant(api, tenant, webhook_receiver)
    itsm.serve_json("/api/tickets", {"result": [TICKET, {"short_description": "no number"}]})
    followup = await create(api, tenant, definition(itsm))
    await reminders(webhook_receiver, 1)

    async def polled() -> Any:
        body = (await api.get(f"/v1/followups/{followup['id']}", headers=tenant.headers())).json()
        return body if body["last_poll"] else None

    body = await eventually(polled, message="the poll is reported")
    assert body["last_poll"]["found"] == 1
    assert [s["index"] for s in body["last_poll"]["skipped"]] == [1]
    listed = (
        await api.get(f"/v1/followups/{followup['id']}/records", headers=tenant.headers())
    ).json()["items"]
    assert [r["reconciliation_id"] for r in listed] == ["INC0012"]


async def test_running_records_finish_on_their_version_and_new_ones_take_the_newest(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    itsm: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await setup_tenant(api, tenant, webhook_receiver)
    followup = await create(api, tenant, definition(itsm, message=COUNTED))
    await reminders(webhook_receiver, 1)
    newer = definition(itsm, message={"card": {"title": "v2: {{ followup.data.number }}"}})
    updated = await api.put(f"/v1/followups/{followup['id']}", json=newer, headers=tenant.headers())
    assert updated.json()["version"] == 2
    itsm.serve_json("/api/tickets", {"result": [TICKET, {**TICKET, "number": "INC0013"}]})
    await api.post(f"/v1/followups/{followup['id']}/poll", headers=tenant.headers())
    await reminders(webhook_receiver, 2)
    await time_env.sleep(timedelta(minutes=61))
    sent = await reminders(webhook_receiver, 4)
    titles = {
        (m["source"]["reconciliation_id"], m["source"]["attempt"]): m["message"]["card"]["title"]
        for m in sent
    }
    assert titles[("INC0012", 2)] == "Approval needed: INC0012 (2/3)"
    assert titles[("INC0013", 1)] == "v2: INC0013"
    assert titles[("INC0013", 2)] == "v2: INC0013"


async def test_export_carries_definitions_and_secret_names_and_another_tenant_imports_them(
    api: httpx.AsyncClient,
    make_tenant: Any,
    webhook_receiver: WebhookReceiver,
    itsm: WebhookReceiver,
) -> None:
    import io
    import zipfile

    acme, globex = await make_tenant(), await make_tenant()
    await setup_tenant(api, acme, webhook_receiver)
    first = await create(api, acme, definition(itsm, status="inactive"))
    await create(api, acme, definition(itsm, status="inactive", name="Second"))

    exported = await api.get(f"/v1/followups/export?ids={first['id']}", headers=acme.headers())
    assert exported.status_code == 200
    assert exported.headers["content-type"] == "application/zip"
    bundle = zipfile.ZipFile(io.BytesIO(exported.content))
    manifest = json.loads(bundle.read("manifest.json"))
    assert manifest["requires"] == {"channels": ["ops"], "secrets": ["ITSM_TOKEN"]}
    assert len(manifest["followups"]) == 1
    assert "itsm-s3cret" not in exported.content.decode("latin-1")
    assert json.loads(bundle.read(manifest["followups"][0]))["schedule"] == {
        "notify_minutes": 60,
        "attempts": 3,
        "send_window": None,
    }

    imported = await api.post(
        "/v1/followups/import",
        content=exported.content,
        headers={**globex.headers(), "Content-Type": "application/zip"},
    )
    assert imported.status_code == 201, imported.text
    report = imported.json()
    assert report["missing"] == {"channels": ["ops"], "secrets": ["ITSM_TOKEN"]}
    [created] = report["created"]
    assert (created["name"], created["status"]) == ("Tickets pending approval", "inactive")
    assert created["data_extraction"] == first["data_extraction"]
    everything = await api.get("/v1/followups/export", headers=acme.headers())
    assert (
        len(
            json.loads(zipfile.ZipFile(io.BytesIO(everything.content)).read("manifest.json"))[
                "followups"
            ]
        )
        == 2
    )


async def test_a_bad_import_file_is_refused_naming_the_problem(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    import io
    import zipfile

    headers = {**tenant.headers(), "Content-Type": "application/zip"}
    assert problems(
        await api.post("/v1/followups/import", content=b"not a zip", headers=headers)
    ) == {"body": "not a zip file made by GET /v1/followups/export"}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr(
            "manifest.json", json.dumps({"format": "nudge-followups", "followups": ["a.json"]})
        )
        bundle.writestr("a.json", json.dumps({"name": "x"}))
    fields = problems(
        await api.post("/v1/followups/import", content=buffer.getvalue(), headers=headers)
    )
    assert "body.a.json.data_extraction" in fields
    assert (await api.get("/v1/followups", headers=tenant.headers())).json()["items"] == []


async def test_groups_are_reminded_unknown_recipients_reported_and_after_each_runs(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    itsm: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await setup_tenant(api, tenant, webhook_receiver)
    admin = tenant.headers()
    for member in ("bob", "cy"):
        await api.put(
            f"/v1/contacts/{member}", json={"email": f"{member}@example.com"}, headers=admin
        )
    await api.put("/v1/groups/service-desk", json={"members": ["bob", "cy"]}, headers=admin)
    itsm.serve_json(
        "/api/tickets",
        {
            "result": [
                {**TICKET, "approver": {"email": "ghost@example.com"}, "group": "service-desk"}
            ]
        },
    )
    note_action = {
        "type": "integration",
        "integration": {
            "name": "note",
            "method": "POST",
            "url": itsm.base_url + "/api/tickets/{{ followup.data.number }}/notes",
            "body": '{"text": "reminder {{ followup.attempt }} sent"}',
        },
    }
    body = definition(
        itsm,
        recipients={"group": {"source": "group", "match_on": "name"}},
        post_actions={"after_each_attempt": [note_action]},
    )
    followup = await create(api, tenant, body)

    sent = await reminders(webhook_receiver, 2)
    assert sorted(m["recipient"]["external_id"] for m in sent) == ["bob", "cy"]
    await eventually(lambda: posts_to(itsm, "/notes"), message="after_each_attempt runs")
    note = next(r for r in itsm.requests if r.path.endswith("/notes"))
    assert note.json == {"text": "reminder 1 sent"}
    await record(api, tenant, followup["id"], attempts_made=1)
    problems_seen = (await record(api, tenant, followup["id"]))["problems"]
    assert problems_seen["unmatched_recipients"] == ["user email=ghost@example.com"]


async def test_a_recipient_integration_names_who_to_remind(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    itsm: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await setup_tenant(api, tenant, webhook_receiver)
    await api.put("/v1/contacts/mgr-7", json={"name": "Manager"}, headers=tenant.headers())
    itsm.serve_json("/api/users/ada@example.com/manager", {"manager": {"id": "mgr-7"}})
    body = definition(
        itsm,
        recipients={
            "integration": {
                "name": "manager",
                "url": itsm.base_url + "/api/users/{{ followup.data.approver.email }}/manager",
            },
            "user": {"source": "manager.id", "match_on": "external_id"},
            "group": REMOVE,
        },
    )
    await create(api, tenant, body)
    [sent] = await reminders(webhook_receiver, 1)
    assert sent["recipient"]["external_id"] == "mgr-7"
