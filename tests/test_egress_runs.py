"""With production settings, runs refuse to call this machine: the listeners are never reached,
and the refusal is a permanent failure that names the rule where users look for it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from nudge.settings import Settings
from tests.conftest import TenantKeys
from tests.utils.followups import followup_definition
from tests.utils.receivers import WebhookReceiver
from tests.utils.waiting import eventually

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test's settings as production has them: no extra destinations allowed."""
    return settings.model_copy(update={"egress_allow": ""})


@pytest.fixture
def time_env(own_time_env: WorkflowEnvironment) -> WorkflowEnvironment:
    return own_time_env  # the poller runs until the test ends


async def test_an_integration_aimed_at_this_machine_reaches_nothing_and_says_why(
    api: httpx.AsyncClient, tenant: TenantKeys, webhook_receiver: WebhookReceiver
) -> None:
    admin = tenant.headers()
    await api.put("/v1/secrets/ITSM_TOKEN", json={"value": "t"}, headers=admin)
    await api.put("/v1/channels/ops", json={"type": "log"}, headers=admin)
    port = webhook_receiver.base_url.rsplit(":", 1)[1]
    # `localhost` and the Temporal UI's kind of address: both only a name for loopback.
    body = followup_definition(f"http://localhost:{port}", channel="ops")
    created = await api.post("/v1/followups", json=body, headers=admin)
    assert created.status_code == 201, created.text

    async def failed_poll() -> dict[str, Any] | None:
        answer = await api.get(f"/v1/followups/{created.json()['id']}", headers=admin)
        report: dict[str, Any] = answer.json()["last_poll"] or {}
        return report if "error" in report else None

    report = await eventually(failed_poll, message="the refused poll is reported")
    assert "loopback" in report["error"] and "NUDGE_EGRESS_ALLOW" in report["error"]
    assert report["attempt"] == 1  # permanent: not retried
    assert webhook_receiver.requests == []


async def test_a_webhook_channel_aimed_at_this_machine_fails_the_delivery_naming_the_rule(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    admin = tenant.headers()
    await api.put("/v1/contacts/ada", json={"name": "Ada"}, headers=admin)
    channel = {"type": "webhook", "config": {"url": webhook_receiver.url}}
    await api.put("/v1/channels/hook", json=channel, headers=admin)
    queued = await api.post(
        "/v1/notifications",
        json={"contact_id": "ada", "channel": "hook", "message": {"kind": "text", "text": "hi"}},
        headers=tenant.headers("service"),
    )
    assert queued.status_code == 202, queued.text
    with pytest.raises(WorkflowFailureError):
        await time_env.client.get_workflow_handle(queued.json()["workflow_id"]).result()
    status = (await api.get(f"/v1/notifications/{queued.json()['id']}", headers=admin)).json()
    assert status["status"] == "failed"
    assert "loopback" in status["error"]
    assert webhook_receiver.requests == []
