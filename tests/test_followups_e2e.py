"""The approval follow-up end to end on `nudge dev`: the real dev server, API and worker.

A sample ITSM, an SMTP server and a webhook receiver run on 127.0.0.1; schedules run
600 times faster (NUDGE_TIME_SCALE), so a 10-minute schedule passes in a second.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from tests.test_dev_stack import DevRun, running_dev
from tests.utils.followups import followup_definition
from tests.utils.histories import scheduled
from tests.utils.receivers import SmtpSink, WebhookReceiver
from tests.utils.waiting import eventually_blocking

pytestmark = pytest.mark.e2e

TICKETS = {
    "result": [
        {
            "number": "INC0012",
            "short_description": "New laptop",
            "approver": {"email": "ada-e2e@example.com"},
        }
    ]
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevRun]:
    root = tmp_path_factory.mktemp("e2e")
    with running_dev(root / "data", root / "logs", {"NUDGE_TIME_SCALE": "600"}) as run:
        yield run


def the_record(api: httpx.Client, followup_id: str, state: str) -> dict[str, Any] | None:
    """The follow-up's only record, when it is in ``state``."""
    [record] = api.get(f"/v1/followups/{followup_id}/records").json()["items"]
    return record if record["state"] == state else None


def record_run(stack: DevRun, followup_id: str) -> tuple[str, list[str]]:
    """The result of the record's run on the stack's Temporal, once it has closed, and how
    each of its `run_attempt` activities ended."""

    async def closed() -> tuple[str, list[str]]:
        client = await Client.connect(f"127.0.0.1:{stack.temporal_port}")
        run = client.get_workflow_handle(f"followup/demo/{followup_id}/record/INC0012")
        result: str = await asyncio.wait_for(run.result(), timeout=30)
        return result, await scheduled(run, "run_attempt")

    return asyncio.run(closed())


def instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def poll_after(api: httpx.Client, followup_id: str, moment: str) -> dict[str, Any] | None:
    """The follow-up's last poll report, when that poll came after ``moment``."""
    report: dict[str, Any] | None = api.get(f"/v1/followups/{followup_id}").json()["last_poll"]
    return report if report and instant(report["at"]) > instant(moment) else None


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
        api.put("/v1/secrets/ITSM_TOKEN", json={"value": "e2e-token"}).raise_for_status()
        mail = {
            "host": "127.0.0.1",
            "port": smtp.port,
            "security": "none",
            "from_address": "nudge@example.com",
        }
        api.put("/v1/channels/mail-e2e", json={"type": "email", "config": mail}).raise_for_status()
        created = api.post(
            "/v1/followups", json=followup_definition(itsm.base_url, channel="mail-e2e")
        )
        assert created.status_code == 201, created.text
        followup_id = created.json()["id"]

        [first] = eventually_blocking(
            lambda: smtp.messages, timeout=30, message="the first reminder is mailed"
        )
        assert first.message["Subject"] == "Approval needed: INC0012"
        text = first.message.get_body(preferencelist=("plain",))
        assert text is not None
        approve_url = re.search(r"Approve: (\S+)", text.get_content())
        assert approve_url, text.get_content()

        pressed = httpx.post(approve_url.group(1), timeout=10)
        assert pressed.status_code == 200, pressed.text
        eventually_blocking(
            lambda: [r for r in itsm.requests if r.path == "/api/tickets/INC0012/approve"],
            timeout=30,
            message="the ITSM's approve endpoint is called",
        )
        record = eventually_blocking(
            lambda: the_record(api, followup_id, "completed"),
            timeout=30,
            message="the record completes",
        )
        assert record["ended_by"] == "contact ada-e2e"

        # Its run has closed: every reminder it sent is an attempt in its history.
        result, attempts = record_run(stack, followup_id)
        assert (result, attempts) == ("completed", ["completed"] * len(attempts))
        # A poll after the end (each second at 600x) finds the ticket still pending and
        # follows it no further: no new record, no new run.
        report = eventually_blocking(
            lambda: poll_after(api, followup_id, record["ended_at"]),
            timeout=30,
            message="a poll after the record ended",
        )
        assert (report["found"], report["new"]) == (1, 0)
        [still] = api.get(f"/v1/followups/{followup_id}/records").json()["items"]
        assert (still["state"], still["attempts_made"]) == ("completed", len(attempts))
        assert len(smtp.messages) == len(attempts)
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
        api.put("/v1/secrets/ITSM_TOKEN", json={"value": "e2e-token"}).raise_for_status()
        body = followup_definition(itsm.base_url, channel="hook-e2e", schedule={"attempts": 10})
        created = api.post("/v1/followups", json=body)
        assert created.status_code == 201, created.text
        followup_id = created.json()["id"]
        [first] = eventually_blocking(
            lambda: hook.requests, timeout=30, message="the first reminder is posted"
        )
        assert first.json["source"]["reconciliation_id"] == "INC0012"
        assert first.headers["x-nudge-signature"].startswith("t=")

        itsm.serve_json("/api/tickets", {"result": []})
        eventually_blocking(
            lambda: the_record(api, followup_id, "resolved"),
            timeout=30,
            message="the record is resolved",
        )
        # Its run has closed before its 10 attempts: each webhook sent is one of them.
        result, attempts = record_run(stack, followup_id)
        assert result == "resolved"
        assert attempts == ["completed"] * len(attempts)
        assert len(hook.requests) == len(attempts) < 10
        api.post(f"/v1/followups/{followup_id}/deactivate").raise_for_status()
