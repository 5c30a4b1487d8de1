"""The demo data `make dev` creates: the `demo` tenant and its demo follow-up.

The tenant and its admin key are made in the database before the API starts; the
follow-up (approvals chased against the sample ITSM) goes through the public API, as a
tenant admin would, so the poller starts the usual way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from nudge.models.db import create_engine, session_factory, transaction
from nudge.settings import Settings
from nudge.store.tenants import create_api_key, create_tenant, find_tenant

DEMO_TENANT = "demo"
DEMO_NAME = "Tickets pending approval (demo)"


async def ensure_demo_tenant(
    settings: Settings, key_file_name: str = "demo-api-key"
) -> tuple[str, bool]:
    """The demo tenant's admin key, creating both on first start.

    The key is kept in a file under the data dir (development only) so that later
    starts can print it again; only its hash is in the database.
    Returns the key and whether the tenant was created now.
    """
    key_file = settings.data_dir / key_file_name
    engine = create_engine(settings.resolved_database_url)
    try:
        async with transaction(session_factory(engine)) as session:
            tenant = await find_tenant(session, DEMO_TENANT)
            if tenant is not None and key_file.exists():
                return key_file.read_text().strip(), False
            created = tenant is None
            if tenant is None:
                tenant = await create_tenant(session, DEMO_TENANT, "Demo tenant")
            key: str = await create_api_key(session, tenant, "admin")
    finally:
        await engine.dispose()
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    return key, created


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


def followup_names(api: httpx.Client) -> Iterator[str]:
    """The name of every follow-up of the tenant, following the list's pages."""
    params: dict[str, str | int] = {"limit": 200}
    while True:
        page = api.get("/v1/followups", params=params).raise_for_status().json()
        yield from (followup["name"] for followup in page["items"])
        if page["next_cursor"] is None:
            return
        params["cursor"] = page["next_cursor"]


def seed_followup_demo(api_url: str, key: str) -> str | None:
    """Create the demo follow-up once; its id, or None when it already exists."""
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {key}"}) as api:
        if DEMO_NAME in followup_names(api):
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
