"""The directory endpoints: contacts, groups, channels, secrets; auth and tenant isolation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from nudge.models.tables import Channel, Secret
from tests.conftest import TenantKeys, problems

ADA = {
    "name": "Ada",
    "email": "ada@example.com",
    "phone": "+34 600 111 222",
    "timezone": "Europe/Madrid",
}


async def test_contact_is_created_then_replaced(api: httpx.AsyncClient, tenant: TenantKeys) -> None:
    created = await api.put("/v1/contacts/ada", json=ADA, headers=tenant.headers())
    assert created.status_code == 200, created.text
    assert created.json()["phone"] == "+34600111222"

    replaced = await api.put("/v1/contacts/ada", json={"name": "Ada L."}, headers=tenant.headers())
    assert replaced.json()["name"] == "Ada L."
    assert replaced.json()["email"] is None
    fetched = await api.get("/v1/contacts/ada", headers=tenant.headers())
    assert fetched.json()["name"] == "Ada L."


async def test_bad_contact_fields_are_named(api: httpx.AsyncClient, tenant: TenantKeys) -> None:
    response = await api.put(
        "/v1/contacts/ada",
        json={
            "email": "not-an-email",
            "timezone": "Mars/Olympus",
            "phone": "call me",
            "color": "red",
        },
        headers=tenant.headers(),
    )
    fields = problems(response)
    assert set(fields) == {"body.email", "body.timezone", "body.phone", "body.color"}
    assert "Mars/Olympus" in fields["body.timezone"]
    missing = await api.get("/v1/contacts/ada", headers=tenant.headers())
    assert missing.status_code == 404


async def test_group_members_must_exist_and_nothing_is_half_written(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    await api.put("/v1/contacts/ada", json=ADA, headers=tenant.headers())
    ok = await api.put("/v1/groups/approvers", json={"members": ["ada"]}, headers=tenant.headers())
    assert ok.json()["members"] == ["ada"]

    bad = await api.put(
        "/v1/groups/approvers", json={"members": ["ada", "ghost"]}, headers=tenant.headers()
    )
    assert problems(bad) == {"body.members.1": "no contact with external id 'ghost'"}
    kept = await api.get("/v1/groups/approvers", headers=tenant.headers())
    assert kept.json()["members"] == ["ada"]


async def test_channel_credentials_are_encrypted_and_never_returned(
    api: httpx.AsyncClient, tenant: TenantKeys, sessions: async_sessionmaker[AsyncSession]
) -> None:
    body = {"type": "webhook", "config": {"url": "https://example.com/hook", "secret": "hunter2"}}
    response = await api.put("/v1/channels/ops", json=body, headers=tenant.headers())
    assert response.status_code == 200, response.text
    assert "hunter2" not in response.text
    assert response.json()["credentials_set"] == ["secret"]
    listed = await api.get("/v1/channels", headers=tenant.headers())
    assert "hunter2" not in listed.text
    async with sessions() as session:
        row = (
            await session.execute(select(Channel).where(Channel.tenant_id == tenant.id))
        ).scalar_one()
    assert "hunter2" not in str(row.config) + (row.sealed_credentials or "")


async def test_channel_config_errors_name_the_field(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    response = await api.put(
        "/v1/channels/mail",
        json={
            "type": "email",
            "config": {"host": "smtp.example.com", "port": 70000, "from_address": "x"},
        },
        headers=tenant.headers(),
    )
    fields = problems(response)
    assert "body.config.port" in fields
    assert "body.config.from_address" in fields
    unknown = await api.put("/v1/channels/x", json={"type": "pigeon"}, headers=tenant.headers())
    assert unknown.status_code == 422
    reserved = await api.put(
        "/v1/channels/last_used", json={"type": "log"}, headers=tenant.headers()
    )
    assert problems(reserved) == {"path.channel_id": "'last_used' is reserved"}


async def test_secrets_are_write_only(
    api: httpx.AsyncClient, tenant: TenantKeys, sessions: async_sessionmaker[AsyncSession]
) -> None:
    put = await api.put(
        "/v1/secrets/ITSM_TOKEN", json={"value": "tok-123"}, headers=tenant.headers()
    )
    assert put.status_code == 204
    names = await api.get("/v1/secrets", headers=tenant.headers())
    assert [s["name"] for s in names.json()["items"]] == ["ITSM_TOKEN"]
    assert "tok-123" not in names.text
    async with sessions() as session:
        stored = (
            await session.execute(select(Secret).where(Secret.tenant_id == tenant.id))
        ).scalar_one()
    assert "tok-123" not in stored.sealed_value
    bad_name = await api.put("/v1/secrets/has-dash", json={"value": "x"}, headers=tenant.headers())
    assert "path.name" in problems(bad_name)
    empty = await api.put("/v1/secrets/EMPTY", json={"value": ""}, headers=tenant.headers())
    assert "body.value" in problems(empty)


async def test_requests_without_a_valid_key_are_401(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    assert (await api.get("/v1/contacts/ada")).status_code == 401
    wrong = await api.get("/v1/contacts/ada", headers={"Authorization": "Bearer nk_wrong"})
    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"] == "Bearer"


async def test_roles_are_enforced(api: httpx.AsyncClient, tenant: TenantKeys) -> None:
    channel = {"type": "log"}
    assert (
        await api.put("/v1/channels/c", json=channel, headers=tenant.headers("agent"))
    ).status_code == 403
    assert (
        await api.put("/v1/channels/c", json=channel, headers=tenant.headers("service"))
    ).status_code == 403
    assert (
        await api.put("/v1/channels/c", json=channel, headers=tenant.headers("admin"))
    ).status_code == 200
    agent_contact = await api.put("/v1/contacts/ada", json=ADA, headers=tenant.headers("agent"))
    assert agent_contact.status_code == 403
    service_contact = await api.put("/v1/contacts/ada", json=ADA, headers=tenant.headers("service"))
    assert service_contact.status_code == 200


async def test_another_tenants_objects_are_not_found(
    api: httpx.AsyncClient, make_tenant: Callable[[], Awaitable[TenantKeys]]
) -> None:
    acme, globex = await make_tenant(), await make_tenant()
    await api.put("/v1/contacts/ada", json=ADA, headers=acme.headers())
    await api.put("/v1/groups/approvers", json={"members": ["ada"]}, headers=acme.headers())
    await api.put("/v1/channels/ops", json={"type": "log"}, headers=acme.headers())
    await api.put("/v1/secrets/TOKEN", json={"value": "acme-only"}, headers=acme.headers())

    for path in (
        "/v1/contacts/ada",
        "/v1/contacts/ada/messages",
        "/v1/groups/approvers",
        "/v1/channels/ops",
    ):
        assert (await api.get(path, headers=globex.headers())).status_code == 404, path
    assert (await api.get("/v1/channels", headers=globex.headers())).json()["items"] == []
    assert (await api.get("/v1/secrets", headers=globex.headers())).json()["items"] == []
    # Globex cannot add Acme's contact to a group of its own either.
    crossing = await api.put("/v1/groups/mine", json={"members": ["ada"]}, headers=globex.headers())
    assert crossing.status_code == 422


async def test_openapi_documents_the_api(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    assert "/v1/notifications" in spec["paths"]
    assert "/v1/contacts/{external_id}/messages" in spec["paths"]
    assert (await api.get("/docs")).status_code == 200


async def test_validation_errors_do_not_echo_what_was_sent(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    body = {
        "type": "email",
        "config": {"host": "h", "from_address": "x@y.z", "password": 12345, "port": "hunter2-port"},
    }
    response = await api.put("/v1/channels/mail", json=body, headers=tenant.headers())
    assert response.status_code == 422
    assert "hunter2" not in response.text
    assert all("input" not in problem for problem in response.json()["detail"])
