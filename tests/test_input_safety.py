"""Input a tenant or a customer sends that used to fool Nudge, through the API."""

from __future__ import annotations

import io
import json
import tracemalloc
import zipfile
from collections.abc import AsyncIterator

import httpx
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.conftest import TenantKeys, problems
from tests.utils.followups import followup_definition
from tests.utils.receivers import WebhookReceiver


async def test_internal_mail_domains_are_valid_addresses(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    for address in ("ana@corp.local", "ops@it.internal", "root@localhost"):
        saved = await api.put("/v1/contacts/ana", json={"email": address}, headers=tenant.headers())
        assert saved.status_code == 200, saved.text
        assert saved.json()["email"] == address
    refused = await api.put("/v1/contacts/ana", json={"email": "ana@"}, headers=tenant.headers())
    assert "body.email" in problems(refused)


async def test_a_card_title_that_does_not_compile_is_named_exactly(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    definition = followup_definition(
        message={"card": {"title": "Approval needed: {% if followup.data.number %}"}}
    )
    response = await api.post("/v1/followups", json=definition, headers=tenant.headers())
    assert response.status_code == 422
    assert list(problems(response)) == ["body.message.card.title"]
    assert "template does not compile" in problems(response)["body.message.card.title"]


async def test_a_button_label_that_does_not_compile_is_named_exactly(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    await api.put("/v1/contacts/ada", json={"name": "Ada"}, headers=tenant.headers())
    await api.put("/v1/channels/console", json={"type": "log"}, headers=tenant.headers())
    card = {"title": "Hi", "buttons": [{"label": "{{ oops", "action": "ok"}]}
    response = await api.post(
        "/v1/notifications",
        json={"contact_id": "ada", "channel": "console", "message": {"kind": "card", "card": card}},
        headers=tenant.headers(),
    )
    assert list(problems(response)) == ["body.message.card.buttons.0.label"]


async def test_an_expensive_template_is_accepted_at_save_time_without_evaluating_it(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    # Compiling evaluates nothing (it took 1.6 s before); rendering refuses it (tested apart).
    await api.put("/v1/secrets/ITSM_TOKEN", json={"value": "t"}, headers=tenant.headers())
    definition = followup_definition(message={"card": {"title": "{{ 7**3000000 }}"}})
    response = await api.post("/v1/followups", json=definition, headers=tenant.headers())
    assert response.status_code == 201, response.text


async def test_a_body_over_1_mb_is_refused_with_413_and_nothing_is_stored(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    big = {"name": "x" * 1_100_000}
    declared = await api.put("/v1/contacts/big", json=big, headers=tenant.headers())
    assert declared.status_code == 413
    assert declared.json()["detail"] == "request body over 1 MB"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"name": "'
        for _ in range(12):
            yield b"x" * 100_000
        yield b'"}'

    streamed = await api.put(
        "/v1/contacts/big",
        content=chunks(),
        headers={**tenant.headers(), "Content-Type": "application/json"},
    )
    assert streamed.status_code == 413
    assert (await api.get("/v1/contacts/big", headers=tenant.headers())).status_code == 404


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, data in files.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


async def test_a_zip_bomb_is_refused_without_unpacking_it(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    manifest = json.dumps({"format": "nudge-followups", "followups": ["a.json"]}).encode()
    headers = {**tenant.headers(), "Content-Type": "application/zip"}
    bomb = _zip({"manifest.json": manifest, "a.json": b"0" * 200_000_000})
    assert len(bomb) < 1_000_000  # it passes the body limit: the zip itself must be checked
    tracemalloc.start()
    try:
        refused = await api.post("/v1/followups/import", content=bomb, headers=headers)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.status_code == 422
    assert "unpacks to more than 20 MB" in refused.text
    assert peak < 50_000_000

    # Within the total, one file over 1 MB is read only up to the cap.
    large = _zip({"manifest.json": manifest, "a.json": b" " * 5_000_000})
    refused = await api.post("/v1/followups/import", content=large, headers=headers)
    assert refused.status_code == 422
    assert problems(refused) == {"body.a.json": "unpacks to more than 1 MB"}
    assert (await api.get("/v1/followups", headers=tenant.headers())).json()["items"] == []


async def test_a_template_naming_what_its_feature_lacks_is_refused_at_save_time(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    await api.put("/v1/contacts/ada", json={"name": "Ada"}, headers=tenant.headers())
    await api.put("/v1/channels/console", json={"type": "log"}, headers=tenant.headers())
    await api.put("/v1/secrets/ITSM_TOKEN", json={"value": "t"}, headers=tenant.headers())
    notification = await api.post(
        "/v1/notifications",
        json={
            "contact_id": "ada",
            "channel": "console",
            "message": {"kind": "text", "text": "Ticket {{ followup.data.number }}"},
        },
        headers=tenant.headers(),
    )
    assert "unknown variable 'followup'" in problems(notification)["body.message.text"]

    followup = followup_definition(message={"card": {"title": "{{ variables.x }}"}})
    answer = await api.post("/v1/followups", json=followup, headers=tenant.headers())
    assert "unknown variable 'variables'" in problems(answer)["body.message.card.title"]

    journey = {
        "name": "welcome",
        "trigger": {"type": "api"},
        "steps": [
            {
                "id": "hi",
                "type": "send_message",
                "channel": "console",
                "message": {"kind": "text", "text": "Hi {{ followup.name }}"},
            }
        ],
    }
    answer = await api.post("/v1/journeys", json=journey, headers=tenant.headers())
    assert "unknown variable 'followup'" in problems(answer)["body.steps.0.message.text"]


async def test_recipient_and_contact_name_the_same_contact_in_a_notification(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
    worker: Worker,
) -> None:
    # `recipient` was a follow-up's name only: a notification using it failed at send time.
    await api.put("/v1/contacts/ada", json={"name": "Ada"}, headers=tenant.headers())
    channel = {"type": "webhook", "config": {"url": webhook_receiver.url}}
    await api.put("/v1/channels/hook", json=channel, headers=tenant.headers())
    text = "{{ recipient.name }} / {{ contact.name }}"
    queued = await api.post(
        "/v1/notifications",
        json={"contact_id": "ada", "channel": "hook", "message": {"kind": "text", "text": text}},
        headers=tenant.headers(),
    )
    assert queued.status_code == 202, queued.text
    await time_env.client.get_workflow_handle(queued.json()["workflow_id"]).result()
    (request,) = webhook_receiver.requests
    assert request.json["message"]["text"] == "Ada / Ada"


async def test_an_encoded_slash_in_an_id_is_not_routed_as_a_separator(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    await api.put("/v1/contacts/x", json={"name": "X"}, headers=tenant.headers())
    for method in ("GET", "PUT"):
        answer = await api.request(
            method, "/v1/contacts/x%2Fmessages", json={"name": "Y"}, headers=tenant.headers()
        )
        assert answer.status_code == 404, (method, answer.text)
        assert answer.json() == {"detail": "an id in the path cannot contain '/'"}
    assert (await api.get("/v1/contacts/x/messages", headers=tenant.headers())).status_code == 200
