"""Journeys through the HTTP API: definitions and their lifecycle, enrollments, the inbox's
view and stops, the chat-menu template. Runs go through a real worker on the time-skipping
server and send to a real webhook receiver."""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from nudge.models.journey_templates import TEMPLATES_DIR
from nudge.naming import CONTACT, JOURNEY, KIND
from tests.conftest import TenantKeys, problems
from tests.utils.histories import scheduled, waiting_on_a_timer
from tests.utils.journeys import (
    at_step,
    create,
    ended,
    enroll,
    in_progress,
    journey,
    run_of,
    send,
    sent_texts,
    setup_contact,
)
from tests.utils.receivers import WebhookReceiver
from tests.utils.waiting import eventually

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture
def time_env(own_time_env: WorkflowEnvironment) -> WorkflowEnvironment:
    """Enrollments wait for replies: a leftover one must not hold the shared server's clock."""
    return own_time_env


def chat_menu() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((TEMPLATES_DIR / "chat-menu.json").read_text())
    return loaded


# Definitions ---------------------------------------------------------------------------------


async def test_a_journey_is_edited_only_while_not_published_and_every_save_is_a_version(
    api: httpx.AsyncClient, tenant: TenantKeys, webhook_receiver: WebhookReceiver
) -> None:
    await setup_contact(api, tenant, webhook_receiver)
    admin = tenant.headers()
    created = await create(api, tenant, journey("Onboarding"), publish=False)
    assert (created["status"], created["version"], created["name"]) == ("draft", 1, "Onboarding")
    journey_id = created["id"]
    assert (await api.get(f"/v1/journeys/{journey_id}", headers=admin)).json() == created
    listed = (await api.get("/v1/journeys", headers=admin)).json()["items"]
    assert [j["id"] for j in listed] == [journey_id]

    renamed = await api.put(f"/v1/journeys/{journey_id}", json=journey("Welcome"), headers=admin)
    assert (renamed.json()["version"], renamed.json()["name"]) == (2, "Welcome")
    published = await api.post(f"/v1/journeys/{journey_id}/publish", headers=admin)
    assert (published.status_code, published.json()["status"]) == (200, "published")
    again = await api.post(f"/v1/journeys/{journey_id}/publish", headers=admin)
    assert again.status_code == 409

    refused = await api.put(f"/v1/journeys/{journey_id}", json=journey("Later"), headers=admin)
    assert refused.status_code == 409
    assert "stop it before editing" in refused.json()["detail"]
    assert (await api.delete(f"/v1/journeys/{journey_id}", headers=admin)).status_code == 409

    stopped = await api.post(f"/v1/journeys/{journey_id}/stop", json={}, headers=admin)
    assert (stopped.status_code, stopped.json()["status"]) == (202, "stopped")
    edited = await api.put(f"/v1/journeys/{journey_id}", json=journey("Later"), headers=admin)
    assert (edited.status_code, edited.json()["version"]) == (200, 3)
    versions = (await api.get(f"/v1/journeys/{journey_id}/versions", headers=admin)).json()["items"]
    assert [(v["version"], v["name"]) for v in versions] == [
        (1, "Onboarding"),
        (2, "Welcome"),
        (3, "Later"),
    ]
    assert (await api.delete(f"/v1/journeys/{journey_id}", headers=admin)).status_code == 204
    assert (await api.get(f"/v1/journeys/{journey_id}", headers=admin)).status_code == 404


async def test_bad_definitions_are_refused_naming_the_field(
    api: httpx.AsyncClient, tenant: TenantKeys, webhook_receiver: WebhookReceiver
) -> None:
    await setup_contact(api, tenant, webhook_receiver)
    admin = tenant.headers()
    bad = journey(steps=[send("greet", "Hi", next="nowhere"), {"id": "done", "type": "end"}])
    assert problems(await api.post("/v1/journeys", json=bad, headers=admin)) == {
        "body.steps.0.next": "no step with id 'nowhere'"
    }
    del bad["name"]
    bad["trigger"] = {"type": "api", "keywords": ["hi"]}
    assert problems(await api.post("/v1/journeys", json=bad, headers=admin)) == {
        "body.name": "Field required",
        "body.trigger.keywords": "only an `incoming_message` trigger has keywords",
    }
    unknown = journey(
        steps=[
            {**send("greet", "Hi"), "channel": "pager"},
            {"id": "on", "type": "trigger_journey", "journey_id": "0" * 32},
        ]
    )
    assert problems(await api.post("/v1/journeys", json=unknown, headers=admin)) == {
        "body.steps.0.channel": "no channel 'pager'",
        "body.steps.1.journey_id": f"no journey {'0' * 32!r}",
    }
    template = journey(steps=[send("greet", "Hi {{ contact.name ")])
    assert set(problems(await api.post("/v1/journeys", json=template, headers=admin))) == {
        "body.steps.0.message.text"
    }
    assert (await api.get("/v1/journeys", headers=admin)).json()["items"] == []


async def test_an_entry_journey_is_published_after_the_journeys_it_hands_over_to(
    api: httpx.AsyncClient, tenant: TenantKeys, webhook_receiver: WebhookReceiver
) -> None:
    await setup_contact(api, tenant, webhook_receiver)
    admin = tenant.headers()
    part = await create(api, tenant, journey("Part", trigger={"type": "manual"}), publish=False)
    handover = [{"id": "go", "type": "trigger_journey", "journey_id": part["id"]}]
    entry = await create(api, tenant, journey("Entry", steps=handover), publish=False)

    refused = await api.post(f"/v1/journeys/{entry['id']}/publish", headers=admin)
    assert refused.status_code == 409
    assert "journey 'Part', which is draft; publish it first" in refused.json()["detail"]
    assert (await api.post(f"/v1/journeys/{part['id']}/publish", headers=admin)).status_code == 200
    assert (await api.post(f"/v1/journeys/{entry['id']}/publish", headers=admin)).status_code == 200

    await api.post(f"/v1/journeys/{part['id']}/stop", headers=admin)
    still_used = await api.delete(f"/v1/journeys/{part['id']}", headers=admin)
    assert still_used.status_code == 409
    assert "'Entry' hands contacts over to this one" in still_used.json()["detail"]
    await api.post(f"/v1/journeys/{entry['id']}/stop", headers=admin)
    assert (await api.delete(f"/v1/journeys/{part['id']}", headers=admin)).status_code == 204
    gone = await api.post(f"/v1/journeys/{entry['id']}/publish", headers=admin)
    assert problems(gone) == {"body.steps.0.journey_id": f"no journey {part['id']!r}"}


async def test_a_journey_of_one_tenant_is_invisible_to_another(
    api: httpx.AsyncClient, make_tenant: Any, webhook_receiver: WebhookReceiver
) -> None:
    acme, globex = await make_tenant(), await make_tenant()
    await setup_contact(api, acme, webhook_receiver)
    await setup_contact(api, globex, webhook_receiver)
    found = await create(api, acme, journey("Acme only", allow_agents_stop=True))
    journey_id = found["id"]
    for method, path, body in (
        ("GET", f"/v1/journeys/{journey_id}", None),
        ("GET", f"/v1/journeys/{journey_id}/versions", None),
        ("PUT", f"/v1/journeys/{journey_id}", journey("Mine now")),
        ("DELETE", f"/v1/journeys/{journey_id}", None),
        ("POST", f"/v1/journeys/{journey_id}/publish", None),
        ("POST", f"/v1/journeys/{journey_id}/stop", {}),
        ("GET", f"/v1/journeys/{journey_id}/enrollments", None),
        ("POST", f"/v1/journeys/{journey_id}/enrollments", {"contact_id": "ada"}),
        ("POST", f"/v1/contacts/ada/journeys/{journey_id}/stop", {"agent": "x"}),
    ):
        answer = await api.request(method, path, json=body, headers=globex.headers())
        assert answer.status_code == 404, (method, path, answer.text)
    assert (await api.get("/v1/journeys", headers=globex.headers())).json()["items"] == []
    # Referring to it from the other tenant is as good as naming nothing.
    steal = journey(steps=[{"id": "go", "type": "trigger_journey", "journey_id": journey_id}])
    assert problems(await api.post("/v1/journeys", json=steal, headers=globex.headers())) == {
        "body.steps.0.journey_id": f"no journey {journey_id!r}"
    }
    assert (await api.get(f"/v1/journeys/{journey_id}", headers=acme.headers())).json()[
        "status"
    ] == "published"


# Enrollments ---------------------------------------------------------------------------------


async def test_enrolling_starts_the_run_once_and_the_inbox_shows_its_step(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await setup_contact(api, tenant, webhook_receiver)
    onboarding = await create(api, tenant, journey("Onboarding"))

    first = await enroll(api, tenant, onboarding["id"])
    assert first.status_code == 201, first.text
    assert {k: first.json()[k] for k in ("journey_id", "journey_name", "contact_id", "state")} == {
        "journey_id": onboarding["id"],
        "journey_name": "Onboarding",
        "contact_id": "ada",
        "state": "active",
    }
    assert await sent_texts(webhook_receiver, 2) == ["Welcome Ada", "OK?"]
    waiting = await at_step(api, tenant, onboarding["id"], "question")
    assert waiting["id"] == first.json()["id"]
    assert waiting["waiting_until"] is not None
    assert await in_progress(api, tenant, role="service") == [waiting]

    again = await enroll(api, tenant, onboarding["id"])
    assert again.status_code == 409
    assert "already in journey 'Onboarding'" in again.json()["detail"]
    unknown = await enroll(api, tenant, onboarding["id"], contact="nobody")
    assert problems(unknown) == {"body.contact_id": "no contact with external id 'nobody'"}

    handle = time_env.client.get_workflow_handle(
        f"journey/{tenant.slug}/{onboarding['id']}/contact/ada"
    )
    attributes = (await handle.describe()).typed_search_attributes
    assert (attributes.get(KIND), attributes.get(JOURNEY), attributes.get(CONTACT)) == (
        "journey",
        onboarding["id"],
        "ada",
    )
    # One enrollment, one run, waiting for the answer with its two messages sent.
    assert len(await in_progress(api, tenant, include_ended=True)) == 1
    await eventually(lambda: waiting_on_a_timer(handle), message="the run waits for the answer")
    assert await scheduled(handle, "send_journey_message") == ["completed"] * 2
    assert len(webhook_receiver.requests) == 2


async def test_only_journeys_with_an_api_trigger_are_enrolled_by_api(
    api: httpx.AsyncClient, tenant: TenantKeys, webhook_receiver: WebhookReceiver
) -> None:
    await setup_contact(api, tenant, webhook_receiver)
    manual = await create(api, tenant, journey("Product menu", trigger={"type": "manual"}))
    by_message = await create(
        api, tenant, journey("Chat", trigger={"type": "incoming_message", "keywords": ["hi"]})
    )
    draft = await create(api, tenant, journey("Not yet"), publish=False)

    refused = await enroll(api, tenant, manual["id"])
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        "journey 'Product menu' has a manual trigger: it is reachable only from another"
        " journey's trigger_journey step"
    )
    assert "only journeys with an api trigger" in (await enroll(api, tenant, by_message["id"])).text
    not_published = await enroll(api, tenant, draft["id"])
    assert not_published.status_code == 409
    assert "is draft, not published" in not_published.json()["detail"]
    assert (
        await api.post(
            f"/v1/journeys/{draft['id']}/enrollments",
            json={"contact_id": "ada"},
            headers=tenant.headers("agent"),
        )
    ).status_code == 403
    # Refused before anything was stored: no enrollment, so no run that could send.
    assert await in_progress(api, tenant, include_ended=True) == []
    assert webhook_receiver.requests == []


async def test_stopping_a_journey_ejects_everyone_for_good(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await setup_contact(api, tenant, webhook_receiver)
    onboarding = await create(api, tenant, journey("Onboarding"))
    assert (await enroll(api, tenant, onboarding["id"])).status_code == 201
    await at_step(api, tenant, onboarding["id"], "question")
    run = run_of(time_env, tenant, onboarding["id"])
    await eventually(lambda: waiting_on_a_timer(run), message="the run waits for the answer")

    stop = await api.post(
        f"/v1/journeys/{onboarding['id']}/stop",
        json={"reason": "campaign over"},
        headers=tenant.headers(),
    )
    assert stop.status_code == 202, stop.text
    done = await ended(api, tenant, onboarding["id"])
    assert (done["state"], done["ended_by"], done["end_reason"]) == (
        "stopped",
        "admin API key",
        "campaign over",
    )
    assert await in_progress(api, tenant) == []
    listed = await api.get(
        f"/v1/journeys/{onboarding['id']}/enrollments",
        params={"state": "stopped"},
        headers=tenant.headers(),
    )
    assert [e["id"] for e in listed.json()["items"]] == [done["id"]]

    republished = await api.post(
        f"/v1/journeys/{onboarding['id']}/publish", headers=tenant.headers()
    )
    assert republished.json()["status"] == "published"
    ejected = await enroll(api, tenant, onboarding["id"])
    assert ejected.status_code == 409
    assert "was ejected" in ejected.json()["detail"]
    # The newest run is still the stopped one, with the two messages it sent before.
    assert await run.result() == "stopped"
    assert await scheduled(run, "send_journey_message") == ["completed"] * 2
    assert [e["id"] for e in await in_progress(api, tenant, include_ended=True)] == [done["id"]]
    assert len(webhook_receiver.requests) == 2


# Stops from the inbox ------------------------------------------------------------------------


async def test_an_agent_stops_a_contacts_journey_and_the_inbox_says_who_and_why(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await setup_contact(api, tenant, webhook_receiver)
    body = journey(
        "Nurture",
        steps=[
            send("greet", "Hello"),
            {"id": "pause", "type": "wait", "minutes": 60},
            send("later", "Still there?"),
        ],
        allow_agents_stop=True,
    )
    nurture = await create(api, tenant, body)
    await enroll(api, tenant, nurture["id"])
    await at_step(api, tenant, nurture["id"], "pause")

    stopped = await api.post(
        f"/v1/contacts/ada/journeys/{nurture['id']}/stop",
        json={"agent": "grace", "reason": "taking over the chat"},
        headers=tenant.headers("agent"),
    )
    assert stopped.status_code == 202, stopped.text
    assert (stopped.json()["state"], stopped.json()["ended_by"]) == ("stopped", "agent grace")
    assert await in_progress(api, tenant) == []
    [history] = await in_progress(api, tenant, include_ended=True)
    assert (history["state"], history["ended_by"], history["end_reason"]) == (
        "stopped",
        "agent grace",
        "taking over the chat",
    )
    handle = time_env.client.get_workflow_handle(
        f"journey/{tenant.slug}/{nurture['id']}/contact/ada"
    )
    # The run has closed without reaching "later": the stop cut its wait short for good.
    assert await handle.result() == "stopped"
    assert await scheduled(handle, "send_journey_message") == ["completed"]
    assert len(webhook_receiver.requests) == 1
    twice = await api.post(
        f"/v1/contacts/ada/journeys/{nurture['id']}/stop",
        json={"agent": "grace"},
        headers=tenant.headers("agent"),
    )
    assert twice.status_code == 409


async def test_agents_cannot_stop_a_journey_that_does_not_allow_it(
    api: httpx.AsyncClient, tenant: TenantKeys, webhook_receiver: WebhookReceiver
) -> None:
    await setup_contact(api, tenant, webhook_receiver)
    locked = await create(api, tenant, journey("Locked", allow_agents_stop=False))
    await enroll(api, tenant, locked["id"])
    await at_step(api, tenant, locked["id"], "question")
    path = f"/v1/contacts/ada/journeys/{locked['id']}/stop"
    body = {"agent": "grace", "reason": "taking over"}

    refused = await api.post(path, json=body, headers=tenant.headers("agent"))
    assert refused.status_code == 403
    assert "allow_agents_stop" in refused.json()["detail"]
    assert (await api.post(path, json=body, headers=tenant.headers("service"))).status_code == 403
    assert [e["state"] for e in await in_progress(api, tenant)] == ["active"]
    # An admin is not held by a setting that protects the journey from agents' mistakes.
    by_admin = await api.post(path, json=body, headers=tenant.headers())
    assert (by_admin.status_code, by_admin.json()["ended_by"]) == (202, "admin grace")


# The chat-menu template ----------------------------------------------------------------------


async def test_importing_the_chat_menu_creates_and_publishes_every_journey(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    answer = await api.post("/v1/journeys/import", json=chat_menu(), headers=tenant.headers())
    assert answer.status_code == 201, answer.text
    imported = {j["name"]: j for j in answer.json()}
    assert set(imported) == {
        "Chat menu: main menu",
        "Chat menu: product",
        "Chat menu: service",
        "Chat menu: about us",
        "Chat menu: talk to sales",
    }
    assert {j["status"] for j in imported.values()} == {"published"}
    main = imported["Chat menu: main menu"]
    handovers = {s["id"]: s["journey_id"] for s in main["steps"] if s["type"] == "trigger_journey"}
    assert handovers == {
        "product": imported["Chat menu: product"]["id"],
        "service": imported["Chat menu: service"]["id"],
        "about": imported["Chat menu: about us"]["id"],
        "sales": imported["Chat menu: talk to sales"]["id"],
    }
    back = next(s for s in imported["Chat menu: product"]["steps"] if s["id"] == "back")
    assert (back["journey_id"], back["start_at"]) == (main["id"], "menu")
    listed = (await api.get("/v1/journeys", headers=tenant.headers())).json()["items"]
    assert {j["id"] for j in listed} == {j["id"] for j in imported.values()}


async def test_a_bad_template_is_refused_whole_naming_the_field(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    broken = chat_menu()
    broken["journeys"]["product"]["steps"][5]["journey_id"] = "@nowhere"
    broken["journeys"]["sales"]["steps"][1]["kind"] = "robot"
    fields = problems(await api.post("/v1/journeys/import", json=broken, headers=tenant.headers()))
    assert (
        fields["body.journeys.product.steps.5.journey_id"]
        == "no journey 'nowhere' in this template"
    )
    assert "body.journeys.sales.steps.1.assign.kind" in fields
    outside = copy.deepcopy(chat_menu())
    outside["journeys"]["about"]["steps"][0]["channel"] = "pager"
    assert problems(
        await api.post("/v1/journeys/import", json=outside, headers=tenant.headers())
    ) == {"body.journeys.about.steps.0.channel": "no channel 'pager'"}
    assert (await api.get("/v1/journeys", headers=tenant.headers())).json()["items"] == []
    forbidden = await api.post(
        "/v1/journeys/import", json=chat_menu(), headers=tenant.headers("service")
    )
    assert forbidden.status_code == 403
