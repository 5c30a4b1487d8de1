"""Input a tenant or a customer sends that used to fool Nudge, through the API."""

from __future__ import annotations

import httpx

from tests.conftest import TenantKeys, problems
from tests.utils.followups import followup_definition


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
