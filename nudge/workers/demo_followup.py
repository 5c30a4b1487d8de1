"""The demo follow-up `make dev` creates: approvals chased against the sample ITSM.

It goes through the public API, as a tenant admin would, so the poller starts the usual way.
"""

from __future__ import annotations

from typing import Any

import httpx

DEMO_NAME = "Tickets pending approval (demo)"


def demo_definition(api_url: str) -> dict[str, Any]:
    itsm = f"{api_url}/demo/itsm/api/tickets"
    auth = {"Authorization": "Bearer {{ secrets.ITSM_TOKEN }}"}

    def call(name: str, path: str) -> dict[str, Any]:
        url = f"{itsm}/{{{{ followup.data.number }}}}/{path}"
        return {
            "type": "integration",
            "integration": {"name": name, "method": "POST", "url": url, "headers": auth},
        }

    return {
        "name": DEMO_NAME,
        "status": "active",
        "data_extraction": {
            "polling_minutes": 10,
            "integrations": [
                {"name": "tickets", "url": f"{itsm}?state=pending_approval", "headers": auth}
            ],
            "set_attributes": [
                {
                    "scope": "global",
                    "name": "pending_count",
                    "value": "{{ tickets.result | length }}",
                }
            ],
            "looping_element": "tickets.result",
            "reconciliation_id": "number",
        },
        "recipients": {"user": {"source": "approver.email", "match_on": "email"}},
        "message": {
            "kind": "card",
            "card": {
                "title": "Approval needed: {{ followup.data.number }}",
                "text": "{{ followup.data.short_description }} "
                "(reminder {{ followup.attempt }} of {{ followup.attempts }})",
                "buttons": [
                    {"label": "Approve", "action": "approve"},
                    {"label": "Reject", "action": "reject"},
                ],
            },
        },
        "channel": "console",
        "schedule": {"notify_minutes": 10, "attempts": 3},
        "post_actions": {"after_all_attempts": [call("escalate", "escalate")]},
        "button_actions": {
            "approve": [call("approve", "approve")],
            "reject": [call("reject", "reject")],
        },
        "exit": {"on_record_resolved": True, "on_reply": False},
    }


def seed_followup_demo(api_url: str, key: str) -> str | None:
    """Create the demo follow-up once; its id, or None when it already exists."""
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {key}"}) as api:
        existing = api.get("/v1/followups").raise_for_status().json()
        if any(f["name"] == DEMO_NAME for f in existing):
            return None
        api.put(
            "/v1/contacts/ada", json={"name": "Ada Lovelace", "email": "ada@example.com"}
        ).raise_for_status()
        if api.get("/v1/channels/console").status_code == 404:
            api.put("/v1/channels/console", json={"type": "log"}).raise_for_status()
        api.put("/v1/secrets/ITSM_TOKEN", json={"value": "demo-itsm-token"}).raise_for_status()
        created = api.post("/v1/followups", json=demo_definition(api_url)).raise_for_status()
        followup_id: str = created.json()["id"]
        return followup_id
