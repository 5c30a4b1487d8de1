"""Helpers for journey tests: definitions, API calls, and waiting for what runs do."""

from __future__ import annotations

from typing import Any

import httpx
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from nudge.naming import journey_workflow_id
from tests.conftest import TenantKeys
from tests.utils.receivers import WebhookReceiver
from tests.utils.waiting import eventually, received

HOOK = "hook"  # the webhook channel every test sends on (the real receiver behind it)


def text(message: str) -> dict[str, str]:
    return {"kind": "text", "text": message}


def send(step_id: str, message: str, **more: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "send_message",
        "channel": HOOK,
        "message": text(message),
        **more,
    }


def ask(step_id: str, question: str, variable: str = "reply", **more: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "ask",
        "channel": HOOK,
        "message": text(question),
        "variable": variable,
        "timeout_minutes": 60,
        **more,
    }


def journey(
    name: str = "Onboarding",
    *,
    trigger: dict[str, Any] | None = None,
    steps: list[dict[str, Any]] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """A definition; by default an `api` journey that greets and then waits for a reply."""
    return {
        "name": name,
        "trigger": trigger or {"type": "api"},
        "settings": settings,
        "steps": steps or [send("greet", "Welcome {{ contact.name }}"), ask("question", "OK?")],
    }


async def setup_contact(
    api: httpx.AsyncClient, tenant: TenantKeys, hook: WebhookReceiver, external_id: str = "ada"
) -> None:
    """A contact, the webhook channel `hook` and the `inbox` channel, both to ``hook``."""
    admin = tenant.headers()
    answer = await api.put(f"/v1/contacts/{external_id}", json={"name": "Ada"}, headers=admin)
    assert answer.status_code == 200, answer.text
    for channel in (HOOK, "inbox"):
        body = {"type": "webhook", "config": {"url": hook.url}}
        answer = await api.put(f"/v1/channels/{channel}", json=body, headers=admin)
        assert answer.status_code == 200, answer.text


async def create(
    api: httpx.AsyncClient, tenant: TenantKeys, body: dict[str, Any], *, publish: bool = True
) -> dict[str, Any]:
    answer = await api.post("/v1/journeys", json=body, headers=tenant.headers())
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    if publish:
        published = await api.post(
            f"/v1/journeys/{created['id']}/publish", headers=tenant.headers()
        )
        assert published.status_code == 200, published.text
        created = published.json()
    return created


async def enroll(
    api: httpx.AsyncClient, tenant: TenantKeys, journey_id: str, contact: str = "ada"
) -> httpx.Response:
    return await api.post(
        f"/v1/journeys/{journey_id}/enrollments",
        json={"contact_id": contact, "variables": {}},
        headers=tenant.headers("service"),
    )


async def message(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    words: str,
    message_id: str,
    *,
    direction: str = "incoming",
    contact: str = "ada",
) -> dict[str, Any]:
    """Post a message event on the `hook` channel; its 202 answer."""
    answer = await api.post(
        "/v1/events/messages",
        json={
            "contact_id": contact,
            "direction": direction,
            "channel": HOOK,
            "text": words,
            "message_id": message_id,
        },
        headers=tenant.headers("service"),
    )
    assert answer.status_code == 202, answer.text
    accepted: dict[str, Any] = answer.json()
    return accepted


async def in_progress(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    contact: str = "ada",
    *,
    include_ended: bool = False,
    role: str = "agent",
) -> list[dict[str, Any]]:
    """The contact's journeys as the inbox sees them."""
    answer = await api.get(
        f"/v1/contacts/{contact}/journeys",
        params={"include_ended": include_ended},
        headers=tenant.headers(role),
    )
    assert answer.status_code == 200, answer.text
    listed: list[dict[str, Any]] = answer.json()["items"]
    return listed


def run_of(
    env: WorkflowEnvironment, tenant: TenantKeys, journey_id: str, contact: str = "ada"
) -> WorkflowHandle[Any, Any]:
    """The contact's run in the journey (its newest run: waiting for it follows the run)."""
    return env.client.get_workflow_handle(journey_workflow_id(tenant.slug, journey_id, contact))


async def at_step(
    api: httpx.AsyncClient, tenant: TenantKeys, journey_id: str, step: str, contact: str = "ada"
) -> dict[str, Any]:
    """The contact's enrollment in the journey, once it is active at ``step``."""

    async def check() -> dict[str, Any] | None:
        for enrollment in await in_progress(api, tenant, contact):
            if enrollment["journey_id"] == journey_id and enrollment["current_step"] == step:
                found: dict[str, Any] = enrollment
                return found
        return None

    found: dict[str, Any] = await eventually(
        check, message=f"journey {journey_id} at step {step!r}"
    )
    return found


async def ended(
    api: httpx.AsyncClient, tenant: TenantKeys, journey_id: str, contact: str = "ada"
) -> dict[str, Any]:
    """The contact's newest enrollment in the journey, once it has ended."""

    async def check() -> dict[str, Any] | None:
        for enrollment in await in_progress(api, tenant, contact, include_ended=True):
            if enrollment["journey_id"] == journey_id:
                return enrollment if enrollment["state"] != "active" else None
        return None

    found: dict[str, Any] = await eventually(check, message=f"the enrollment in {journey_id} ends")
    return found


async def sent_texts(hook: WebhookReceiver, count: int) -> list[str]:
    """The texts of every message the receiver got, once there are ``count``."""
    return [r.json["message"]["text"] for r in await received(hook, count)]
