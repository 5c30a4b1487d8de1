"""Input the database cannot store, or the API could not answer back, is a 422 naming where it
is (on PostgreSQL each of these was a 500); found by fuzzing the API (tests/test_openapi.py)."""

from __future__ import annotations

import httpx

from nudge.models.followup_bundle import write_bundle
from nudge.models.followups import FollowUpDefinition
from nudge.models.storable import DEPTH_MESSAGE, MAX_DEPTH, NUL_MESSAGE
from tests.conftest import TenantKeys, problems
from tests.utils.followups import followup_definition

JSON = {"Content-Type": "application/json"}


def nested(depth: int) -> object:
    value: object = "bottom"
    for _ in range(depth):
        value = [value]
    return value


async def test_a_nul_character_in_a_path_query_or_body_is_refused(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    admin = tenant.headers()
    answer = await api.put("/v1/contacts/a%00b", json={"name": "Ada"}, headers=admin)
    assert problems(answer) == {"path.external_id": NUL_MESSAGE}
    body = {"name": "Ada\x00", "attributes": {"k\x00": ["ok", "no\x00"]}}
    answer = await api.put("/v1/contacts/ada", json=body, headers=admin)
    assert problems(answer) == {
        "body.name": NUL_MESSAGE,
        "body.attributes.k\x00": NUL_MESSAGE,
        "body.attributes.k\x00.1": NUL_MESSAGE,
    }
    saved = await api.put("/v1/contacts/ada", json={"name": "Ada"}, headers=admin)
    assert saved.status_code == 200, saved.text
    answer = await api.get("/v1/contacts/ada/messages?cursor=%00", headers=admin)
    assert problems(answer) == {"query.cursor": NUL_MESSAGE}
    # A query parameter the route does not read is no concern of it.
    ignored = await api.get("/v1/contacts/ada?unknown=%00", headers=admin)
    assert ignored.status_code == 200, ignored.text


async def test_a_body_nested_too_deep_is_refused_before_it_is_stored(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    admin = tenant.headers()
    deep = {"attributes": {"a": nested(MAX_DEPTH)}}
    answer = await api.put("/v1/contacts/deep", json=deep, headers=admin)
    assert answer.status_code == 422
    assert list(problems(answer).values()) == [DEPTH_MESSAGE]
    assert (await api.get("/v1/contacts/deep", headers=admin)).status_code == 404
    just_so = {"attributes": {"a": nested(MAX_DEPTH - 3)}}
    saved = await api.put("/v1/contacts/deep", json=just_so, headers=admin)
    assert saved.status_code == 200, saved.text
    assert (await api.get("/v1/contacts/deep", headers=admin)).json() == saved.json()


async def test_bodies_that_are_not_json_are_a_422_not_a_400(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    admin = {**tenant.headers(), **JSON}
    not_utf8 = await api.put("/v1/secrets/TOKEN", content=b'{"value": "\xff"}', headers=admin)
    assert not_utf8.status_code == 422, not_utf8.text
    assert not_utf8.json()["detail"] == [
        {"loc": ["body", 11], "msg": "JSON decode error", "type": "json_invalid"}
    ]
    too_deep = b"[" * 100_000 + b"]" * 100_000
    answer = await api.put("/v1/secrets/TOKEN", content=too_deep, headers=admin)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["type"] == "json_invalid"


async def test_an_imported_definition_with_a_nul_character_is_refused(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    definition = FollowUpDefinition.model_validate(followup_definition(name="Tickets\x00"))
    bundle = write_bundle("elsewhere", [definition])
    headers = {**tenant.headers(), "Content-Type": "application/zip"}
    answer = await api.post("/v1/followups/import", content=bundle, headers=headers)
    assert answer.status_code == 422, answer.text
    [(where, message)] = problems(answer).items()
    assert where.startswith("body.") and where.endswith(".json.name"), where
    assert message == NUL_MESSAGE
