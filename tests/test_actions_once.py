"""Post-actions and button actions are done and recorded one by one: a retry after one
failed skips those already done (an "approve" reaches the ITSM once) and gives later
templates what the done ones answered; every call carries an Idempotency-Key that is the
same on each retry of that one action."""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from nudge.integrations.calls import call_integration
from nudge.models.integrations import Integration
from tests.conftest import TenantKeys
from tests.utils.delivery_runs import (
    TICKET,
    add_contact,
    create_followup,
    record_run,
    result_of,
    webhook_channel,
)
from tests.utils.egress import loopback_http
from tests.utils.receivers import WebhookReceiver
from tests.utils.waiting import received

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture
def time_env(own_time_env: WorkflowEnvironment) -> WorkflowEnvironment:
    """Follow-up pollers run forever: each test has a server of its own."""
    return own_time_env


@pytest.fixture
def itsm() -> Any:
    with WebhookReceiver() as server:
        server.serve_json("/api/tickets", {"result": [TICKET]})
        server.serve_json("/api/tickets/INC0012/approve", {"id": "A-1"})
        yield server


@pytest.fixture
def notes() -> Any:
    """Another system the second action writes to: down for its first call."""
    with WebhookReceiver() as server:
        server.respond_with(503)
        yield server


def _actions(itsm: WebhookReceiver, notes: WebhookReceiver) -> list[dict[str, Any]]:
    return [
        {
            "type": "integration",
            "integration": {
                "name": "approval",
                "method": "POST",
                "url": itsm.base_url + "/api/tickets/{{ followup.data.number }}/approve",
            },
        },
        {
            "type": "set_attribute",
            "set_attribute": {"scope": "local", "name": "step", "value": "2"},
        },
        {
            "type": "integration",
            "integration": {
                "name": "note",
                "method": "POST",
                "url": notes.base_url + "/notes",
                "body": '{"approval": "{{ approval.id }}", "step": "{{ local.step }}"}',
            },
        },
    ]


def _calls(server: WebhookReceiver, suffix: str) -> list[Any]:
    return [r for r in server.requests if r.method == "POST" and r.path.endswith(suffix)]


async def test_after_each_attempt_actions_run_once_each_with_stable_keys(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    itsm: WebhookReceiver,
    notes: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await add_contact(api, tenant)
    await webhook_channel(api, tenant, webhook_receiver)
    followup = await create_followup(
        api,
        tenant,
        itsm,
        channel="ops",
        schedule={"notify_minutes": 60, "attempts": 1},
        post_actions={"after_each_attempt": _actions(itsm, notes), "after_all_attempts": []},
    )
    run = record_run(time_env.client, tenant, followup)
    assert await result_of(run) == "completed"

    approvals = _calls(itsm, "/approve")
    assert len(approvals) == 1  # the note failed once; the approval was not made again
    written = _calls(notes, "/notes")
    assert len(written) == 2
    # The retry's template read what the done action answered, and the local it set.
    assert [r.json for r in written] == [{"approval": "A-1", "step": "2"}] * 2
    prefix = f"{run.id}#1:after_each_attempt:1"
    assert approvals[0].headers["idempotency-key"] == f"{prefix}:0"
    assert {r.headers["idempotency-key"] for r in written} == {f"{prefix}:2"}
    assert len(webhook_receiver.requests) == 1  # the attempt's retry sent nothing again


async def test_button_actions_run_once_each(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    itsm: WebhookReceiver,
    notes: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await add_contact(api, tenant)
    await webhook_channel(api, tenant, webhook_receiver)
    followup = await create_followup(
        api, tenant, itsm, channel="ops", button_actions={"approve": _actions(itsm, notes)}
    )
    [card] = [r.json for r in await received(webhook_receiver, 1)]
    approve = next(b for b in card["message"]["card"]["buttons"] if b["action"] == "approve")
    pressed = await api.post(urlparse(approve["url"]).path)
    assert pressed.status_code == 200, pressed.text
    run = record_run(time_env.client, tenant, followup)
    assert await result_of(run) == "completed"

    assert len(_calls(itsm, "/approve")) == 1
    written = _calls(notes, "/notes")
    assert [r.json for r in written] == [{"approval": "A-1", "step": "2"}] * 2
    assert {r.headers["idempotency-key"] for r in written} == {f"{run.id}#1:button:approve:2"}


async def test_every_integration_call_carries_a_key_stable_across_retries(
    itsm: WebhookReceiver,
) -> None:
    tickets = Integration(name="tickets", url=itsm.base_url + "/api/tickets")
    own = Integration(
        name="own", url=itsm.base_url + "/api/tickets", headers={"idempotency-key": "theirs"}
    )
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id="followup/acme/f1", activity_id="7")
    async with loopback_http() as http:
        for attempt in (1, 2):  # a retry of the activity: the same activity id
            env.info = dataclasses.replace(env.info, attempt=attempt)
            await env.run(call_integration, http, tickets, {}, secrets={})
        await env.run(call_integration, http, tickets, {}, secrets={}, idempotency_key="given")
        await env.run(call_integration, http, own, {}, secrets={}, idempotency_key="given")
    keys = [r.headers.get("idempotency-key") for r in itsm.requests]
    assert keys == ["followup/acme/f1:7:tickets"] * 2 + ["given", "theirs"]
