"""Message metrics and campaign results, from deliveries written straight to the database
with chosen states and times: every figure of every grouping, the period's bounds, another
tenant's sends, the 404s and 422s, and the streamed CSV (SQLite, or PostgreSQL when
NUDGE_TEST_DATABASE_URL is set)."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from nudge.models.db import read_only, transaction
from nudge.models.message_metrics import CampaignResult
from nudge.models.tables import Campaign, CampaignRow, Contact, Delivery, utcnow
from nudge.store import message_metrics as store
from tests.conftest import TenantKeys, problems

MESSAGES = "/v1/metrics/messages"
START = datetime(2026, 3, 10, tzinfo=UTC)
END = datetime(2026, 3, 12, tzinfo=UTC)
PERIOD = {"from": "2026-03-10T00:00:00Z", "to": "2026-03-12T00:00:00Z"}
DAY_10 = START + timedelta(hours=9)
DAY_11 = START + timedelta(days=1, hours=9)
TICK = timedelta(microseconds=1)


def figures(
    total: int, sent: int, delivered: int, read: int, failed: int, replied: int
) -> dict[str, Any]:
    rate = round(replied / delivered, 4) if delivered else None
    return {
        "total": total,
        "sent": sent,
        "delivered": delivered,
        "read": read,
        "failed": failed,
        "replied": replied,
        "reply_rate": rate,
    }


# --- the data ---------------------------------------------------------------------------------


class Writer:
    """Adds a tenant's contacts, campaigns and deliveries in one session."""

    def __init__(self, session: AsyncSession, tenant_id: str) -> None:
        self.session, self.tenant_id = session, tenant_id
        self.contact: Contact | None = None

    async def add_contact(self, external_id: str, phone: str | None = None) -> Contact:
        contact = Contact(tenant_id=self.tenant_id, external_id=external_id, phone=phone)
        self.session.add(contact)
        await self.session.flush()
        return contact

    async def add_campaign(self, recipient_kind: str = "phone") -> Campaign:
        found = Campaign(
            tenant_id=self.tenant_id,
            name="Renewals",
            definition={"recipient_kind": recipient_kind},
        )
        self.session.add(found)
        await self.session.flush()
        return found

    async def send(
        self,
        status: str,
        created: datetime,
        *,
        channel: str = "wa-main",
        belongs_to: str | None = None,
        template: str | None = "renewal",
        refused: bool = False,
        replied: bool = False,
        fallback_of: str | None = None,
        error: str | None = None,
    ) -> Delivery:
        """A delivery as the sender and its receipts leave it in ``status``; ``refused``: a
        failure at the send, which never left."""
        if self.contact is None:
            self.contact = await self.add_contact(f"c-{uuid.uuid4().hex[:8]}")
        row = Delivery(
            tenant_id=self.tenant_id,
            idempotency_key=f"k-{uuid.uuid4().hex}",
            contact_id=self.contact.id,
            channel=channel,
            status=status,
            created_at=created,
            belongs_to=belongs_to,
            template=template,
            fallback_of=fallback_of,
            error=error,
        )
        _times(row, created, refused=refused, replied=replied)
        self.session.add(row)
        await self.session.flush()
        return row


def _times(row: Delivery, created: datetime, *, refused: bool, replied: bool) -> None:
    left = not refused and row.status not in ("sending", "retrying", "unknown")
    if left:
        row.sent_at = created + timedelta(seconds=1)
    if row.status in ("delivered", "read"):
        row.delivered_at = created + timedelta(seconds=5)
    if row.status == "read":
        row.read_at = created + timedelta(minutes=1)
    if left and row.status in ("failed", "undelivered"):
        row.failed_at = created + timedelta(seconds=5)
    if replied:
        row.replied_at = created + timedelta(minutes=5)


@dataclass
class Sends:
    one: Campaign  # recipients by phone
    two: Campaign  # recipients by external id
    other_tenants: Campaign
    deliveries: dict[str, Delivery]


@pytest.fixture
async def sends(
    sessions: async_sessionmaker[AsyncSession],
    tenant: TenantKeys,
    make_tenant: Callable[[], Awaitable[TenantKeys]],
) -> Sends:
    """Campaign one on wa-main (`renewal`), campaign two mostly on wa-two (`promo`), a
    notification and a record's send, a fallback try, sends just outside the period, and
    another tenant's sends with the same names."""
    other = await make_tenant()
    async with transaction(sessions) as session:
        w = Writer(session, tenant.id)
        one, two = await w.add_campaign(), await w.add_campaign("external_id")
        c1, c2 = f"campaign:{one.id}", f"campaign:{two.id}"
        d = {
            "read": await w.send("read", DAY_10, belongs_to=c1, replied=True),
            "delivered": await w.send("delivered", DAY_10, belongs_to=c1),
            # Campaign one's, from the other number.
            "sent": await w.send("sent", DAY_10, belongs_to=c1, channel="wa-two"),
            "failed": await w.send("failed", DAY_11, belongs_to=c1, error="=cmd|' /C calc'!A0"),
            "refused": await w.send("failed", DAY_11, belongs_to=c1, refused=True),
            "undelivered": await w.send(
                "undelivered", DAY_11, belongs_to=c2, channel="wa-two", template="promo"
            ),
            # The last moment of the period, and of its second day.
            "last": await w.send(
                "delivered",
                END - TICK,
                belongs_to=c2,
                channel="wa-two",
                template="promo",
                replied=True,
            ),
            # The first moment of the period.
            "sending": await w.send(
                "sending", START, belongs_to="notification:n1", channel="sms", template="text"
            ),
            "unknown": await w.send(
                "unknown", DAY_11, belongs_to="notification:n2", channel="sms", template="text"
            ),
            "untemplated": await w.send(
                "retrying", DAY_11, belongs_to="record:r1", channel="sms", template=None
            ),
            # Just outside the period: campaign metrics count them, message metrics do not.
            "before": await w.send("delivered", START - TICK, belongs_to=c1),
            "at_end": await w.send(
                "delivered", END, belongs_to=c2, channel="wa-two", template="promo"
            ),
        }
        # A fallback try of the undelivered one: the same message, never counted again.
        d["fallback"] = await w.send(
            "delivered",
            DAY_11 + timedelta(minutes=10),
            belongs_to=c2,
            channel="sms",
            template="promo",
            fallback_of=d["undelivered"].id,
            replied=True,
        )
        o = Writer(session, other.id)
        theirs = await o.add_campaign()
        for status in ("read", "failed", "delivered"):
            await o.send(status, DAY_10, belongs_to=f"campaign:{theirs.id}", replied=True)
            await o.send(status, DAY_11, channel="sms", template="text")
    return Sends(one, two, theirs, d)


async def metrics_of(
    api: httpx.AsyncClient, tenant: TenantKeys, group_by: str, **params: str
) -> dict[str | None, dict[str, Any]]:
    answer = await api.get(
        MESSAGES, params={**PERIOD, "group_by": group_by, **params}, headers=tenant.headers()
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["group_by"] == group_by
    items = {item.pop("key"): item for item in body["items"]}
    assert len(items) == len(body["items"])
    return items


# --- message metrics ------------------------------------------------------------------------


async def test_by_campaign(api: httpx.AsyncClient, tenant: TenantKeys, sends: Sends) -> None:
    answer = await api.get(
        MESSAGES, params={**PERIOD, "group_by": "campaign"}, headers=tenant.headers()
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["from"], body["to"]) == ("2026-03-10T00:00:00Z", "2026-03-12T00:00:00Z")
    keys = [item["key"] for item in body["items"]]
    # By key, the sends of no campaign last.
    assert keys == [*sorted([sends.one.id, sends.two.id]), None]

    items = await metrics_of(api, tenant, "campaign")
    # read, delivered, sent, failed after leaving, refused (not sent).
    assert items[sends.one.id] == figures(5, 4, 2, 1, 2, 1)
    # undelivered, delivered and replied; its fallback try not counted.
    assert items[sends.two.id] == figures(2, 2, 1, 0, 1, 1)
    # sending, unknown, retrying: nothing left yet.
    assert items[None] == figures(3, 0, 0, 0, 0, 0)
    assert sends.other_tenants.id not in items


async def test_by_template(api: httpx.AsyncClient, tenant: TenantKeys, sends: Sends) -> None:
    items = await metrics_of(api, tenant, "template")
    assert list(items) == ["promo", "renewal", "text", None]
    assert items["renewal"] == figures(5, 4, 2, 1, 2, 1)
    assert items["promo"] == figures(2, 2, 1, 0, 1, 1)
    assert items["text"] == figures(2, 0, 0, 0, 0, 0)  # never the other tenant's
    assert items[None] == figures(1, 0, 0, 0, 0, 0)


async def test_by_sender(api: httpx.AsyncClient, tenant: TenantKeys, sends: Sends) -> None:
    items = await metrics_of(api, tenant, "sender")
    assert list(items) == ["sms", "wa-main", "wa-two"]
    # The fallback try on sms is not counted; nor the other tenant's sms sends.
    assert items["sms"] == figures(3, 0, 0, 0, 0, 0)
    assert items["wa-main"] == figures(4, 3, 2, 1, 2, 1)
    assert items["wa-two"] == figures(3, 3, 1, 0, 1, 1)


async def test_by_day(api: httpx.AsyncClient, tenant: TenantKeys, sends: Sends) -> None:
    items = await metrics_of(api, tenant, "day")
    assert list(items) == ["2026-03-10", "2026-03-11"]
    # read, delivered, sent, and the sending one at the period's first moment.
    assert items["2026-03-10"] == figures(4, 3, 2, 1, 0, 1)
    # failed, refused, undelivered, unknown, retrying, and the last moment's delivered one.
    assert items["2026-03-11"] == figures(6, 3, 1, 0, 3, 1)


async def test_every_grouping_adds_up_to_the_same(
    api: httpx.AsyncClient, tenant: TenantKeys, sends: Sends
) -> None:
    def totals(items: dict[str | None, dict[str, Any]]) -> dict[str, int]:
        names = ("total", "sent", "delivered", "read", "failed", "replied")
        return {name: sum(item[name] for item in items.values()) for name in names}

    found = [totals(await metrics_of(api, tenant, g)) for g in ("campaign", "template", "day")]
    found.append(totals(await metrics_of(api, tenant, "sender")))
    expected = {"total": 10, "sent": 6, "delivered": 3, "read": 1, "failed": 3, "replied": 2}
    assert found == [expected] * 4


async def test_the_period_bounds(api: httpx.AsyncClient, tenant: TenantKeys, sends: Sends) -> None:
    # Shifted by a microsecond: the first moment's send is out, the one just before is in.
    shifted = {"from": "2026-03-09T23:59:59.999999Z", "to": "2026-03-11T23:59:59.999999Z"}
    items = await metrics_of(api, tenant, "sender", **shifted)
    assert items["sms"] == figures(3, 0, 0, 0, 0, 0)  # `sending` is still in, at the start
    assert items["wa-main"] == figures(5, 4, 3, 1, 2, 1)  # `before` counts
    assert items["wa-two"] == figures(2, 2, 0, 0, 1, 0)  # the end's `last` does not
    # Any offset is honoured.
    local = {"from": "2026-03-10T01:00:00+01:00", "to": "2026-03-11T21:00:00-03:00"}
    assert await metrics_of(api, tenant, "sender", **local) == await metrics_of(
        api, tenant, "sender"
    )


async def test_days_are_utc_dates_whatever_the_session_time_zone(
    sessions: async_sessionmaker[AsyncSession], tenant: TenantKeys, sends: Sends
) -> None:
    for zone in ("Asia/Tokyo", "America/Sao_Paulo"):
        async with read_only(sessions)() as session:
            if session.bind.dialect.name == "postgresql":
                # Undone with the transaction, so the pooled connection stays as it was.
                await session.execute(text(f"SET LOCAL TIME ZONE '{zone}'"))
            rows = await store.message_metrics(
                session, tenant.id, start=START, end=END, group_by="day"
            )
            await session.rollback()
        assert [(row.key, row.total) for row in rows] == [("2026-03-10", 4), ("2026-03-11", 6)]


async def test_the_period_defaults_to_the_last_30_days(
    api: httpx.AsyncClient, tenant: TenantKeys, sessions: async_sessionmaker[AsyncSession]
) -> None:
    now = utcnow()
    async with transaction(sessions) as session:
        w = Writer(session, tenant.id)
        await w.send("delivered", now - timedelta(days=29), replied=True)
        await w.send("read", now - timedelta(days=31))
    answer = await api.get(MESSAGES, params={"group_by": "sender"}, headers=tenant.headers())
    assert answer.status_code == 200, answer.text
    body = answer.json()
    start, end = (datetime.fromisoformat(body[name]) for name in ("from", "to"))
    assert end - start == timedelta(days=30)
    assert now <= end <= utcnow()
    assert body["items"] == [{"key": "wa-main", **figures(1, 1, 1, 0, 0, 1)}]
    # Only `to`: the 30 days before it; group_by defaults to day.
    answer = await api.get(
        MESSAGES, params={"to": (now - timedelta(days=30)).isoformat()}, headers=tenant.headers()
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["group_by"] == "day"
    assert [item["total"] for item in answer.json()["items"]] == [1]


async def test_a_tenant_without_sends_has_no_groups(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    assert await metrics_of(api, tenant, "campaign") == {}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2026-03-12T00:00:00Z", "to": "2026-03-12T00:00:00Z"}, "query.from"),
        ({"from": "2026-03-13T00:00:00Z", "to": "2026-03-12T00:00:00Z"}, "query.from"),
        ({"from": "2025-03-10T00:00:00Z", "to": "2026-03-12T00:00:00Z"}, "query.from"),
        ({"from": "next tuesday"}, "query.from"),
        # What pydantic alone would take: seconds since 1970, a bare date, no offset.
        ({"to": "2"}, "query.to"),
        ({"from": "2026-03-10"}, "query.from"),
        ({"from": "2026-03-10T00:00:00"}, "query.from"),
        # An unencoded + is a space.
        ({"from": "2026-03-10T00:00:00 01:00"}, "query.from"),
        # Before year 1 once in UTC.
        ({"from": "0001-01-01T00:00:00+01:00", "to": "0001-01-02T00:00:00Z"}, "query.from"),
        ({"to": "2026-13-01T00:00:00Z"}, "query.to"),
        ({"group_by": "week"}, "query.group_by"),
    ],
)
async def test_a_wrong_period_or_grouping_is_a_422(
    api: httpx.AsyncClient, tenant: TenantKeys, params: dict[str, str], field: str
) -> None:
    answer = await api.get(MESSAGES, params=params, headers=tenant.headers())
    assert list(problems(answer)) == [field]


async def test_a_year_and_a_day_is_the_longest_period(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    span = {"from": "2025-03-11T00:00:00Z", "to": "2026-03-12T00:00:00Z"}  # 366 days
    answer = await api.get(MESSAGES, params=span, headers=tenant.headers())
    assert answer.status_code == 200, answer.text
    # The default start stops at the first moment there is.
    answer = await api.get(
        MESSAGES, params={"to": "0001-01-05T00:00:00Z"}, headers=tenant.headers()
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["from"] == "0001-01-01T00:00:00Z"


async def test_only_admins_read_metrics(api: httpx.AsyncClient, tenant: TenantKeys) -> None:
    answer = await api.get(MESSAGES, headers=tenant.headers("service"))
    assert answer.status_code == 403


# --- one campaign ----------------------------------------------------------------------------


async def test_campaign_metrics_count_all_its_sends(
    api: httpx.AsyncClient, tenant: TenantKeys, sends: Sends
) -> None:
    one = await api.get(f"/v1/campaigns/{sends.one.id}/metrics", headers=tenant.headers())
    assert one.status_code == 200, one.text
    # The period's five and the delivered one before it.
    assert one.json() == figures(6, 5, 3, 1, 2, 1)
    assert one.json()["reply_rate"] == 0.3333
    two = await api.get(f"/v1/campaigns/{sends.two.id}/metrics", headers=tenant.headers())
    # With the one at the period's end; still not the fallback try.
    assert two.json() == figures(3, 3, 2, 0, 1, 1)


async def test_a_campaign_without_sends_has_zeros(
    api: httpx.AsyncClient, tenant: TenantKeys, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with transaction(sessions) as session:
        fresh = await Writer(session, tenant.id).add_campaign()
    answer = await api.get(f"/v1/campaigns/{fresh.id}/metrics", headers=tenant.headers())
    assert answer.json() == figures(0, 0, 0, 0, 0, 0)
    assert answer.json()["reply_rate"] is None


@pytest.mark.parametrize("what", ["metrics", "results.csv"])
async def test_an_unknown_or_another_tenants_campaign_is_a_404(
    api: httpx.AsyncClient, tenant: TenantKeys, sends: Sends, what: str
) -> None:
    for campaign_id in ("nope", sends.other_tenants.id):
        answer = await api.get(f"/v1/campaigns/{campaign_id}/{what}", headers=tenant.headers())
        assert answer.status_code == 404, answer.text
        assert answer.json() == {"detail": f"campaign {campaign_id!r} not found"}


# --- a campaign's results -------------------------------------------------------------------


@dataclass
class Results:
    one: Campaign
    two: Campaign
    deliveries: dict[str, Delivery]


@pytest.fixture
async def results(
    sessions: async_sessionmaker[AsyncSession], tenant: TenantKeys, sends: Sends
) -> Results:
    """Campaign one's rows (by phone): sent and read, refused with a formula for an error,
    queued, skipped; campaign two's row (by external id)."""
    d = sends.deliveries
    async with transaction(sessions) as session:
        w = Writer(session, tenant.id)
        ada = await w.add_contact("ada", phone="+5511999990001")
        bob = await w.add_contact("@bob")  # no phone: its external id
        cy = await w.add_contact("cy", phone="+5511999990003")
        one, two = sends.one.id, sends.two.id
        session.add_all(
            [
                _row(one, 5, bob, "skipped", error="-cancelled before it was sent"),
                _row(one, 2, ada, "sent", d["read"]),
                _row(one, 4, cy, "queued"),
                _row(one, 3, bob, "sent", d["failed"], error="row's own"),
                _row(two, 2, cy, "sent", d["last"]),
            ]
        )
    return Results(sends.one, sends.two, d)


def _row(
    campaign_id: str,
    line: int,
    contact: Contact,
    status: str,
    delivery: Delivery | None = None,
    error: str | None = None,
) -> CampaignRow:
    return CampaignRow(
        campaign_id=campaign_id,
        line=line,
        contact_id=contact.id,
        channel="wa-main",
        values={"name": contact.external_id},
        status=status,
        delivery_id=delivery.id if delivery else None,
        error=error,
    )


async def results_csv(
    api: httpx.AsyncClient, tenant: TenantKeys, campaign_id: str
) -> list[dict[str, str]]:
    answer = await api.get(f"/v1/campaigns/{campaign_id}/results.csv", headers=tenant.headers())
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    assert answer.headers["content-disposition"] == (
        f'attachment; filename="campaign-{campaign_id}-results.csv"'
    )
    reader = csv.DictReader(io.StringIO(answer.text))
    assert reader.fieldnames == list(CampaignResult.model_fields)
    return list(reader)


@pytest.mark.parametrize("page", [1000, 2, 1])
async def test_the_results_csv(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    results: Results,
    page: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store, "RESULTS_PAGE", page)  # several pages, one query each
    rows = await results_csv(api, tenant, results.one.id)
    read, failed = results.deliveries["read"], results.deliveries["failed"]
    assert rows == [
        {
            "line": "2",
            "recipient": "+5511999990001",  # a phone number stays as written
            "channel": "wa-main",
            "status": "sent",
            "delivery_status": "read",
            "sent_at": _iso(read.sent_at),
            "delivered_at": _iso(read.delivered_at),
            "read_at": _iso(read.read_at),
            "failed_at": "",
            "replied_at": _iso(read.replied_at),
            "error": "",
        },
        {
            "line": "3",
            "recipient": "'@bob",
            "channel": "wa-main",
            "status": "sent",
            "delivery_status": "failed",
            "sent_at": _iso(failed.sent_at),
            "delivered_at": "",
            "read_at": "",
            "failed_at": _iso(failed.failed_at),
            "replied_at": "",
            "error": "'=cmd|' /C calc'!A0",  # the delivery's error before the row's
        },
        _unsent(4, "+5511999990003", "queued", ""),
        _unsent(5, "'@bob", "skipped", "'-cancelled before it was sent"),
    ]


async def test_results_by_external_id(
    api: httpx.AsyncClient, tenant: TenantKeys, results: Results
) -> None:
    (row,) = await results_csv(api, tenant, results.two.id)
    assert (row["line"], row["recipient"], row["delivery_status"]) == ("2", "cy", "delivered")


async def test_a_campaign_without_rows_has_only_the_header(
    api: httpx.AsyncClient, tenant: TenantKeys, sends: Sends
) -> None:
    assert await results_csv(api, tenant, sends.one.id) == []


async def test_results_stream_in_pages(
    sessions: async_sessionmaker[AsyncSession], tenant: TenantKeys, results: Results
) -> None:
    async with read_only(sessions)() as session:
        lines = [
            row.line
            async for row in store.campaign_results(session, tenant.id, results.one.id, page_size=3)
        ]
        # Another tenant asking for the same campaign gets nothing.
        theirs = [row async for row in store.campaign_results(session, "other", results.one.id)]
    assert (lines, theirs) == ([2, 3, 4, 5], [])


def _unsent(line: int, recipient: str, status: str, error: str) -> dict[str, str]:
    empty = dict.fromkeys(("sent_at", "delivered_at", "read_at", "failed_at", "replied_at"), "")
    return {
        "line": str(line),
        "recipient": recipient,
        "channel": "wa-main",
        "status": status,
        "delivery_status": "",
        **empty,
        "error": error,
    }


def _iso(value: datetime | None) -> str:
    assert value is not None
    return value.isoformat()
