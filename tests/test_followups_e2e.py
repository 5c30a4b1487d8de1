"""The approval follow-up end to end on `nudge dev`: the real dev server, API and worker.

A sample ITSM, an SMTP server and a webhook receiver run on 127.0.0.1; schedules run
600 times faster (NUDGE_TIME_SCALE), so a 10-minute schedule passes in a second.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.test_dev_stack import DevRun, running_dev
from tests.utils.receivers import SmtpSink, WebhookReceiver

pytestmark = pytest.mark.e2e

TICKETS = {
    "result": [
        {"number": "INC0012", "short_description": "New laptop", "approver": "ada-e2e@example.com"}
    ]
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevRun]:
    root = tmp_path_factory.mktemp("e2e")
    with running_dev(root / "data", root / "logs", {"NUDGE_TIME_SCALE": "600"}) as run:
        yield run


def wait_until(check: Any, what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def approval_followup(itsm: WebhookReceiver, channel: str, attempts: int = 3) -> dict[str, Any]:
    itsm_api = itsm.base_url + "/api/tickets"
    return {
        "name": "Tickets pending approval",
        "status": "active",
        "data_extraction": {
            "polling_minutes": 10,
            "integrations": [{"name": "tickets", "url": itsm_api + "?state=pending_approval"}],
            "looping_element": "tickets.result",
            "reconciliation_id": "number",
        },
        "recipients": {"user": {"source": "approver", "match_on": "email"}},
        "message": {
            "kind": "card",
            "card": {
                "title": "Approval needed: {{ followup.data.number }}",
                "text": "{{ followup.data.short_description }}",
                "buttons": [
                    {"label": "Approve", "action": "approve"},
                    {"label": "Reject", "action": "reject"},
                ],
            },
        },
        "channel": channel,
        "schedule": {"notify_minutes": 60, "attempts": attempts},
        "button_actions": {
            "approve": [
                {
                    "type": "integration",
                    "integration": {
                        "name": "approve",
                        "method": "POST",
                        "url": itsm_api + "/{{ followup.data.number }}/approve",
                    },
                }
            ]
        },
    }


def test_approval_by_email_calls_the_itsm_and_stops_the_reminders(
    stack: DevRun, tmp_path: Path
) -> None:
    key = stack.demo_key()
    with (
        WebhookReceiver() as itsm,
        SmtpSink() as smtp,
        httpx.Client(
            base_url=stack.api, headers={"Authorization": f"Bearer {key}"}, timeout=10
        ) as api,
    ):
        itsm.serve_json("/api/tickets", TICKETS)
        api.put(
            "/v1/contacts/ada-e2e", json={"name": "Ada", "email": "ada-e2e@example.com"}
        ).raise_for_status()
        mail = {
            "host": "127.0.0.1",
            "port": smtp.port,
            "security": "none",
            "from_address": "nudge@example.com",
        }
        api.put("/v1/channels/mail-e2e", json={"type": "email", "config": mail}).raise_for_status()
        created = api.post("/v1/followups", json=approval_followup(itsm, "mail-e2e"))
        assert created.status_code == 201, created.text
        followup_id = created.json()["id"]

        [first] = smtp.wait_for(1, timeout=30)
        assert first.message["Subject"] == "Approval needed: INC0012"
        text = first.message.get_body(preferencelist=("plain",))
        assert text is not None
        approve_url = re.search(r"Approve: (\S+)", text.get_content())
        assert approve_url, text.get_content()

        pressed = httpx.post(approve_url.group(1), timeout=10)
        assert pressed.status_code == 200, pressed.text
        wait_until(
            lambda: [r for r in itsm.requests if r.path == "/api/tickets/INC0012/approve"],
            "the approve call",
        )

        def ended() -> dict[str, Any] | None:
            [record] = api.get(f"/v1/followups/{followup_id}/records").json()
            return record if record["state"] == "completed" else None

        record = wait_until(ended, "the record to complete")
        assert record["ended_by"] == "contact ada-e2e"
        sent = len(smtp.messages)
        time.sleep(12)  # two more reminder intervals at 600x: nothing may leave
        assert len(smtp.messages) == sent
        api.post(f"/v1/followups/{followup_id}/deactivate").raise_for_status()


def test_a_ticket_that_leaves_the_queue_gets_no_further_webhook(stack: DevRun) -> None:
    key = stack.demo_key()
    with (
        WebhookReceiver() as itsm,
        WebhookReceiver() as hook,
        httpx.Client(
            base_url=stack.api, headers={"Authorization": f"Bearer {key}"}, timeout=10
        ) as api,
    ):
        itsm.serve_json("/api/tickets", TICKETS)
        api.put(
            "/v1/contacts/ada-e2e", json={"name": "Ada", "email": "ada-e2e@example.com"}
        ).raise_for_status()
        api.put(
            "/v1/channels/hook-e2e",
            json={"type": "webhook", "config": {"url": hook.url, "secret": "k"}},
        ).raise_for_status()
        created = api.post("/v1/followups", json=approval_followup(itsm, "hook-e2e", attempts=10))
        followup_id = created.json()["id"]
        [first] = hook.wait_for(1, timeout=30)
        assert first.json["source"]["reconciliation_id"] == "INC0012"
        assert first.headers["x-nudge-signature"].startswith("t=")

        itsm.serve_json("/api/tickets", {"result": []})

        def resolved() -> bool:
            [record] = api.get(f"/v1/followups/{followup_id}/records").json()
            return bool(record["state"] == "resolved")

        wait_until(resolved, "the record to be resolved")
        sent = len(hook.requests)
        time.sleep(12)
        assert len(hook.requests) == sent
        assert sent < 10
        api.post(f"/v1/followups/{followup_id}/deactivate").raise_for_status()
