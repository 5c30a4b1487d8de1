"""Every list endpoint answers one page, `{"items": [...], "next_cursor": ...}`, in its own
order, with a capped `limit` and an opaque cursor that only sets the position: never another
tenant's rows, and a cursor the list did not give out is a 422 at `query.cursor`."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from nudge.models.db import transaction
from nudge.models.tables import Enrollment, FollowUpRecord, Message
from nudge.store.directory import get_contact
from tests.conftest import TenantKeys, problems
from tests.utils.followups import followup_definition

MakeTenant = Callable[[], Awaitable[TenantKeys]]
# One moment for many rows: the tie-breaker (the id) alone must keep pages apart.
SAME_MOMENT = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def draft_journey(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "trigger": {"type": "api"},
        "steps": [
            {
                "id": "greet",
                "type": "send_message",
                "channel": "log",
                "message": {"kind": "text", "text": "Hi"},
            }
        ],
    }


async def call(
    api: httpx.AsyncClient, tenant: TenantKeys, method: str, path: str, **kw: Any
) -> Any:
    answer = await api.request(method, path, headers=tenant.headers(), **kw)
    assert answer.status_code < 300, (method, path, answer.text)
    return answer.json() if answer.content else None


async def every_page(
    api: httpx.AsyncClient, tenant: TenantKeys, path: str, limit: int, **params: Any
) -> list[list[dict[str, Any]]]:
    """Each page of the list, first to last, following `next_cursor`."""
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        answer = await api.get(path, params=query, headers=tenant.headers())
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert set(page) == {"items", "next_cursor"}
        assert len(page["items"]) <= limit
        pages.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100, "the cursor goes round in circles"


async def seed_directory(api: httpx.AsyncClient, tenant: TenantKeys) -> dict[str, str]:
    """What every list needs to exist: a contact, a channel, a secret, a follow-up, a journey."""
    await call(api, tenant, "PUT", "/v1/contacts/ada", json={"name": "Ada"})
    await call(api, tenant, "PUT", "/v1/channels/log", json={"type": "log"})
    await call(api, tenant, "PUT", "/v1/secrets/ITSM_TOKEN", json={"value": "s3cret"})
    definition = followup_definition(channel="log", status="inactive")
    followup = await call(api, tenant, "POST", "/v1/followups", json=definition)
    journey = await call(api, tenant, "POST", "/v1/journeys", json=draft_journey("Onboarding"))
    return {"followup": followup["id"], "journey": journey["id"]}


def list_paths(ids: dict[str, str]) -> list[str]:
    return [
        "/v1/followups",
        f"/v1/followups/{ids['followup']}/records",
        "/v1/journeys",
        f"/v1/journeys/{ids['journey']}/versions",
        f"/v1/journeys/{ids['journey']}/enrollments",
        "/v1/contacts/ada/journeys",
        "/v1/contacts/ada/messages",
        "/v1/channels",
        "/v1/secrets",
        "/v1/api-keys",
    ]


async def test_every_list_answers_a_page_with_a_capped_limit_and_checked_cursor(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    ids = await seed_directory(api, tenant)
    other_list = (await api.get("/v1/api-keys?limit=1", headers=tenant.headers())).json()
    assert other_list["next_cursor"]  # the tenant has three keys
    forged = base64.urlsafe_b64encode(json.dumps(["x", 1, 2]).encode()).decode()
    for path in list_paths(ids):
        page = await api.get(path, headers=tenant.headers())
        assert page.status_code == 200, (path, page.text)
        assert set(page.json()) == {"items", "next_cursor"}, path
        full = await api.get(path, params={"limit": 200}, headers=tenant.headers())
        assert full.status_code == 200, (path, full.text)
        for limit in (0, 201, -1):
            refused = await api.get(path, params={"limit": limit}, headers=tenant.headers())
            assert list(problems(refused)) == ["query.limit"], (path, limit)
        for cursor in ("not a cursor", "e30", forged, "x" * 3000):
            refused = await api.get(path, params={"cursor": cursor}, headers=tenant.headers())
            assert list(problems(refused)) == ["query.cursor"], (path, cursor)
        if path != "/v1/api-keys":  # a cursor of another list (another ordering) is refused
            refused = await api.get(
                path, params={"cursor": other_list["next_cursor"]}, headers=tenant.headers()
            )
            assert list(problems(refused)) == ["query.cursor"], path


async def test_a_tampered_cursor_is_a_422_never_a_database_error(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    for name in ("A", "B", "C"):
        await call(api, tenant, "PUT", f"/v1/secrets/{name}", json={"value": "v"})
    page = (await api.get("/v1/secrets?limit=1", headers=tenant.headers())).json()
    cursor = page["next_cursor"]
    ordering, name, secret_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * 4))
    assert name == "A"
    for position in (
        [name, 7],  # a number where the id is text
        [name, "x\u0000"],  # PostgreSQL refuses NUL in text
        [name, "\ud800"],  # a lone surrogate cannot be sent as UTF-8
        [name, "y" * 600],
        [None, secret_id],
        [name],
        [name, secret_id, "extra"],
    ):
        text = json.dumps([ordering, *position])
        tampered = base64.urlsafe_b64encode(text.encode()).decode()
        refused = await api.get(f"/v1/secrets?cursor={tampered}", headers=tenant.headers())
        assert list(problems(refused)) == ["query.cursor"], position
    # A position that was never a row's is still just a position.
    text = json.dumps([ordering, "B", "0" * 32])
    moved = base64.urlsafe_b64encode(text.encode()).decode()
    after_b = (await api.get(f"/v1/secrets?cursor={moved}", headers=tenant.headers())).json()
    assert [s["name"] for s in after_b["items"]] == ["B", "C"]


async def test_channels_page_by_id_with_no_gaps_or_repeats(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    slugs = [f"ch-{n:02d}" for n in range(11)]
    for slug in reversed(slugs):
        await call(api, tenant, "PUT", f"/v1/channels/{slug}", json={"type": "log"})
    pages = await every_page(api, tenant, "/v1/channels", limit=4)
    assert [len(p) for p in pages] == [4, 4, 3]
    assert [c["id"] for page in pages for c in page] == slugs
    # Exactly one page's worth: the last page is full and says so (no empty page after it).
    assert [len(p) for p in await every_page(api, tenant, "/v1/channels", limit=11)] == [11]


async def test_follow_ups_page_oldest_first_without_the_deleted(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    await call(api, tenant, "PUT", "/v1/channels/log", json={"type": "log"})
    await call(api, tenant, "PUT", "/v1/secrets/ITSM_TOKEN", json={"value": "s3cret"})
    created = []
    for n in range(7):
        definition = followup_definition(channel="log", status="inactive", name=f"F{n}")
        created.append((await call(api, tenant, "POST", "/v1/followups", json=definition))["id"])
    await call(api, tenant, "DELETE", f"/v1/followups/{created[3]}")
    pages = await every_page(api, tenant, "/v1/followups", limit=2)
    assert [len(p) for p in pages] == [2, 2, 2]
    assert [f["id"] for page in pages for f in page] == created[:3] + created[4:]


async def test_records_that_were_found_at_once_page_in_reconciliation_order(
    api: httpx.AsyncClient, tenant: TenantKeys, sessions: async_sessionmaker[AsyncSession]
) -> None:
    ids = await seed_directory(api, tenant)
    found = [f"INC{n:04d}" for n in range(9)]
    async with transaction(sessions) as session:
        for rid in reversed(found):
            session.add(
                FollowUpRecord(
                    tenant_id=tenant.id,
                    followup_id=ids["followup"],
                    reconciliation_id=rid,
                    version=1,
                    first_seen_at=SAME_MOMENT if rid != "INC0000" else SAME_MOMENT - timedelta(1),
                )
            )
    path = f"/v1/followups/{ids['followup']}/records"
    pages = await every_page(api, tenant, path, limit=2)
    assert [len(p) for p in pages] == [2, 2, 2, 2, 1]
    assert [r["reconciliation_id"] for page in pages for r in page] == found


async def test_enrollments_page_newest_first_and_keep_their_filters(
    api: httpx.AsyncClient, tenant: TenantKeys, sessions: async_sessionmaker[AsyncSession]
) -> None:
    ids = await seed_directory(api, tenant)
    contacts = [f"c{n}" for n in range(8)]
    for external_id in contacts:
        await call(api, tenant, "PUT", f"/v1/contacts/{external_id}", json={})
    async with transaction(sessions) as session:
        for n, external_id in enumerate(contacts):
            contact = await get_contact(session, tenant.id, external_id)
            session.add(
                Enrollment(
                    tenant_id=tenant.id,
                    journey_id=ids["journey"],
                    contact_id=contact.id,
                    version=1,
                    state="active" if n % 2 else "completed",
                    # Pairs that started at the same moment, the newest pair last.
                    started_at=SAME_MOMENT + timedelta(minutes=n // 2),
                )
            )
    path = f"/v1/journeys/{ids['journey']}/enrollments"
    pages = await every_page(api, tenant, path, limit=3)
    listed = [e for page in pages for e in page]
    assert [len(p) for p in pages] == [3, 3, 2]
    assert len({e["id"] for e in listed}) == len(contacts)
    keys = [(e["started_at"], e["id"]) for e in listed]
    assert keys == sorted(keys, reverse=True)
    active = [e for page in await every_page(api, tenant, path, 3, state="active") for e in page]
    assert [e["contact_id"] for e in active] == ["c7", "c5", "c3", "c1"]
    # The default page is larger than other lists' (it was before lists were paged).
    assert len((await api.get(path, headers=tenant.headers())).json()["items"]) == 8


async def test_the_inbox_pages_a_contacts_journeys_in_its_two_orders(
    api: httpx.AsyncClient, tenant: TenantKeys, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await call(api, tenant, "PUT", "/v1/contacts/ada", json={"name": "Ada"})
    await call(api, tenant, "PUT", "/v1/channels/log", json={"type": "log"})
    journeys = [
        (await call(api, tenant, "POST", "/v1/journeys", json=draft_journey(f"J{n}")))["id"]
        for n in range(5)
    ]
    async with transaction(sessions) as session:
        ada = await get_contact(session, tenant.id, "ada")
        for n, journey_id in enumerate(journeys):
            session.add(
                Enrollment(
                    tenant_id=tenant.id,
                    journey_id=journey_id,
                    contact_id=ada.id,
                    version=1,
                    state="stopped" if n == 2 else "active",
                    started_at=SAME_MOMENT + timedelta(minutes=n),
                )
            )
    path = "/v1/contacts/ada/journeys"
    in_progress = [e["journey_name"] for p in await every_page(api, tenant, path, 2) for e in p]
    assert in_progress == ["J0", "J1", "J3", "J4"]
    every = await every_page(api, tenant, path, 2, include_ended="true")
    assert [e["journey_name"] for p in every for e in p] == ["J4", "J3", "J2", "J1", "J0"]


async def test_the_history_pages_newest_first_through_messages_of_one_moment(
    api: httpx.AsyncClient, tenant: TenantKeys, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await call(api, tenant, "PUT", "/v1/contacts/ada", json={"name": "Ada"})
    async with transaction(sessions) as session:
        ada = await get_contact(session, tenant.id, "ada")
        for n in range(12):
            at = SAME_MOMENT + timedelta(seconds=n // 4)
            session.add(
                Message(
                    tenant_id=tenant.id,
                    contact_id=ada.id,
                    direction="incoming",
                    channel="chat",
                    kind="text",
                    text=str(n),
                    body={"kind": "text", "text": str(n)},
                    at=at,
                )
            )
    pages = await every_page(api, tenant, "/v1/contacts/ada/messages", limit=5)
    listed = [m for page in pages for m in page]
    assert [len(p) for p in pages] == [5, 5, 2]
    assert len({m["id"] for m in listed}) == 12
    keys = [(m["at"], m["id"]) for m in listed]
    assert keys == sorted(keys, reverse=True)


@pytest.mark.parametrize("limit", [1, 2])
async def test_a_cursor_of_one_tenant_shows_another_only_its_own_rows(
    api: httpx.AsyncClient, make_tenant: MakeTenant, limit: int
) -> None:
    acme, globex = await make_tenant(), await make_tenant()
    # Interleaved ids: Acme's cursor is a position among Globex's channels too.
    for n in range(1, 9):
        owner = acme if n % 2 else globex
        await call(api, owner, "PUT", f"/v1/channels/m-{n}", json={"type": "log"})
    acme_page = (
        await api.get("/v1/channels", params={"limit": limit}, headers=acme.headers())
    ).json()
    assert [c["id"] for c in acme_page["items"]] == ["m-1", "m-3"][:limit]
    seen_by_globex = await api.get(
        "/v1/channels", params={"cursor": acme_page["next_cursor"]}, headers=globex.headers()
    )
    assert seen_by_globex.status_code == 200, seen_by_globex.text
    after = "m-3" if limit == 2 else "m-1"
    expected = [f"m-{n}" for n in (2, 4, 6, 8) if f"m-{n}" > after]
    assert [c["id"] for c in seen_by_globex.json()["items"]] == expected
    assert seen_by_globex.json()["next_cursor"] is None


async def test_a_follow_up_cursor_of_one_tenant_lists_nothing_of_it_for_another(
    api: httpx.AsyncClient, make_tenant: MakeTenant
) -> None:
    acme, globex = await make_tenant(), await make_tenant()
    mine: dict[str, list[str]] = {acme.slug: [], globex.slug: []}
    for owner in (acme, globex):
        await call(api, owner, "PUT", "/v1/channels/log", json={"type": "log"})
        await call(api, owner, "PUT", "/v1/secrets/ITSM_TOKEN", json={"value": "s3cret"})
    for n in range(6):
        owner = (acme, globex)[n % 2]
        definition = followup_definition(channel="log", status="inactive", name=f"F{n}")
        mine[owner.slug].append(
            (await call(api, owner, "POST", "/v1/followups", json=definition))["id"]
        )
    first = (await api.get("/v1/followups?limit=1", headers=acme.headers())).json()
    assert [f["id"] for f in first["items"]] == mine[acme.slug][:1]
    answer = await api.get(
        "/v1/followups", params={"cursor": first["next_cursor"]}, headers=globex.headers()
    )
    assert answer.status_code == 200, answer.text
    # Globex's follow-ups created after Acme's first: all of Globex's, none of Acme's.
    assert [f["id"] for f in answer.json()["items"]] == mine[globex.slug]
