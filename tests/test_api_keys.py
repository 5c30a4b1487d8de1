"""API keys: admins list, create and revoke them; a revoked key answers 401 at once."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from tests.conftest import TenantKeys, problems
from tests.test_cli import nudge


async def test_a_created_key_works_is_listed_by_prefix_and_revoked_answers_401(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    created = await api.post("/v1/api-keys", json={"role": "service"}, headers=tenant.headers())
    assert created.status_code == 201, created.text
    key = created.json()
    assert key["api_key"].startswith(key["prefix"]) and len(key["prefix"]) < len(key["api_key"])
    service = {"Authorization": f"Bearer {key['api_key']}"}
    assert (await api.get("/v1/contacts/nobody", headers=service)).status_code == 404

    listed = (await api.get("/v1/api-keys", headers=tenant.headers())).json()["items"]
    mine = next(k for k in listed if k["id"] == key["id"])
    assert mine["role"] == "service" and mine["last_used_at"] is not None
    assert all("api_key" not in k for k in listed)
    assert key["api_key"] not in json.dumps(listed)

    revoked = await api.delete(f"/v1/api-keys/{key['id']}", headers=tenant.headers())
    assert revoked.status_code == 204
    assert (await api.get("/v1/contacts/nobody", headers=service)).status_code == 401
    listed = (await api.get("/v1/api-keys", headers=tenant.headers())).json()["items"]
    assert key["id"] not in {k["id"] for k in listed}
    again = await api.delete(f"/v1/api-keys/{key['id']}", headers=tenant.headers())
    assert again.status_code == 404


async def test_keys_stay_within_their_tenant(
    api: httpx.AsyncClient, make_tenant: Callable[[], Awaitable[TenantKeys]]
) -> None:
    acme, other = await make_tenant(), await make_tenant()
    created = await api.post("/v1/api-keys", json={"role": "agent"}, headers=acme.headers())
    key_id = created.json()["id"]
    assert (await api.delete(f"/v1/api-keys/{key_id}", headers=other.headers())).status_code == 404
    assert key_id not in {
        k["id"] for k in (await api.get("/v1/api-keys", headers=other.headers())).json()["items"]
    }
    still = {"Authorization": f"Bearer {created.json()['api_key']}"}
    assert (await api.get("/v1/contacts/x/journeys", headers=still)).status_code == 404


async def test_only_admins_manage_keys_and_bad_bodies_name_the_field(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    for role in ("service", "agent"):
        answer = await api.get("/v1/api-keys", headers=tenant.headers(role))
        assert answer.status_code == 403
    bad = await api.post("/v1/api-keys", json={"role": "root"}, headers=tenant.headers())
    assert "body.role" in problems(bad)
    mixed = await api.post(
        "/v1/api-keys", json={"role": "service", "agent": "grace"}, headers=tenant.headers()
    )
    assert mixed.status_code == 422


def test_nudge_key_revoke_stops_the_key(database_url: str, tmp_path: Path) -> None:
    env = {"NUDGE_DATABASE_URL": database_url, "NUDGE_DATA_DIR": str(tmp_path)}
    slug = f"acme-{uuid.uuid4().hex[:6]}"
    assert nudge("tenant", "create", slug, env=env).returncode == 0
    created = nudge(
        "key", "create", "--tenant", slug, "--role", "agent", "--agent", "grace", "--json", env=env
    )
    key_id = json.loads(created.stdout)["id"]
    revoked = nudge("key", "revoke", key_id, "--tenant", slug, env=env)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in revoked.stdout
    unknown = nudge("key", "revoke", key_id, "--tenant", slug, env=env)
    assert unknown.returncode == 2 and "not found" in unknown.stderr
    assert "Traceback" not in unknown.stderr
