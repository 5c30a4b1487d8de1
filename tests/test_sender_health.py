"""Sender health: WhatsApp's quality rating, read from the fake Cloud API over real HTTP,
and Nudge's own receipts of the last 7 days (deliveries written straight to the database)
make each sender's `good`, `medium` or `bad`, as JSON or CSV."""

from __future__ import annotations

import csv
import io
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from nudge.api.routes.senders import CSV_COLUMNS, csv_cell, to_csv, wants_csv
from nudge.dev.fake_twilio import FakeTwilio
from nudge.dev.fake_whatsapp import FakeWhatsApp, GraphError
from nudge.messaging import sender_health
from nudge.messaging.sender_health import Rating, judge
from nudge.models.db import transaction
from nudge.models.sender_health import SendCounts, SenderHealth
from nudge.models.tables import Contact, Delivery, utcnow
from nudge.settings import Settings
from tests.conftest import TenantKeys, api_client

HEALTH = "/v1/senders/health"
# 50 sends, 1 failed: 2%, under the 3% that makes a sender medium.
GOOD_RECEIPTS = {"read": 30, "delivered": 19, "failed": 1}

StartWhatsApp = Callable[..., FakeWhatsApp]


class BrokenWhatsApp(FakeWhatsApp):
    """Takes messages, but its phone number node answers 500 (Graph's code 2)."""

    def _phone_number(self, query: dict[str, list[str]]) -> dict[str, Any]:
        raise GraphError(500, 2, "Service temporarily unavailable", error_type="OAuthException")


class SlowWhatsApp(FakeWhatsApp):
    """Answers the rating, too late."""

    def _phone_number(self, query: dict[str, list[str]]) -> dict[str, Any]:
        time.sleep(1.5)
        return super()._phone_number(query)


# --- fakes, channels and deliveries ---------------------------------------------------------


@pytest.fixture
def whatsapp() -> Iterator[StartWhatsApp]:
    """Starts fake Cloud APIs (one per number, each with its rating), stopped after the test."""
    with ExitStack() as stack:

        def start(
            rating: str = "GREEN", tier: str = "TIER_1K", kind: type[FakeWhatsApp] = FakeWhatsApp
        ) -> FakeWhatsApp:
            fake = stack.enter_context(kind())
            fake.quality_rating, fake.messaging_limit_tier = rating, tier
            return fake

        yield start


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


async def put_channel(
    api: httpx.AsyncClient, tenant: TenantKeys, slug: str, body: dict[str, Any]
) -> None:
    answer = await api.put(f"/v1/channels/{slug}", json=body, headers=tenant.headers())
    assert answer.status_code == 200, answer.text


async def whatsapp_channel(
    api: httpx.AsyncClient, tenant: TenantKeys, fake: FakeWhatsApp, slug: str
) -> None:
    config = {
        "phone_number_id": fake.phone_number_id,
        "access_token": fake.access_token,
        "app_secret": fake.app_secret,
        "verify_token": "verify-me",
        "base_url": fake.base_url,
    }
    await put_channel(api, tenant, slug, {"type": "whatsapp", "config": config})


async def sms_channel(
    api: httpx.AsyncClient, tenant: TenantKeys, fake: FakeTwilio, slug: str
) -> None:
    config = {
        "account_sid": fake.account_sid,
        "auth_token": fake.auth_token,
        "from": fake.numbers[0],
        "base_url": fake.base_url,
    }
    await put_channel(api, tenant, slug, {"type": "sms", "config": config})


async def add_deliveries(
    sessions: async_sessionmaker[AsyncSession],
    tenant: TenantKeys,
    channel: str,
    statuses: dict[str, int],
    *,
    refused: int = 0,
    replied: int = 0,
    days_ago: float = 1,
) -> None:
    """Deliveries as the sender and its receipts leave them: ``statuses`` counts them by final
    status (a `read` one was sent and delivered first); ``refused`` failed at the send, never
    leaving; the first ``replied`` of them got an answer."""
    created = utcnow() - timedelta(days=days_ago)
    async with transaction(sessions) as session:
        contact = Contact(tenant_id=tenant.id, external_id=f"c-{uuid.uuid4().hex[:8]}")
        session.add(contact)
        await session.flush()
        rows = [_delivery(status, created) for status, n in statuses.items() for _ in range(n)]
        rows += [_delivery("failed", created, left=False) for _ in range(refused)]
        for index, row in enumerate(rows):
            row.tenant_id, row.contact_id, row.channel = tenant.id, contact.id, channel
            if index < replied:
                row.replied_at = created + timedelta(minutes=5)
        session.add_all(rows)


def _delivery(status: str, created: Any, *, left: bool = True) -> Delivery:
    at = created + timedelta(seconds=5)
    row = Delivery(idempotency_key=f"k-{uuid.uuid4().hex}", status=status, created_at=created)
    if left and status not in ("sending", "retrying", "unknown"):
        row.sent_at = created + timedelta(seconds=1)
    if status in ("delivered", "read"):
        row.delivered_at = at
    if status == "read":
        row.read_at = at + timedelta(minutes=1)
    if left and status in ("failed", "undelivered"):
        row.failed_at, row.error_code = at, "131026"
    return row


async def senders_of(
    api: httpx.AsyncClient, tenant: TenantKeys, **params: str
) -> dict[str, dict[str, Any]]:
    answer = await api.get(HEALTH, params=params, headers=tenant.headers())
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    return {item["channel"]: item for item in answer.json()["items"]}


@pytest.fixture
async def four_senders(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    sessions: async_sessionmaker[AsyncSession],
    whatsapp: StartWhatsApp,
    twilio: FakeTwilio,
) -> None:
    """GREEN, YELLOW and RED numbers with good receipts, an SMS sender failing 25% (and a log
    channel, which is no sender)."""
    for rating in ("GREEN", "YELLOW", "RED"):
        slug = f"wa-{rating.lower()}"
        await whatsapp_channel(api, tenant, whatsapp(rating), slug)
        await add_deliveries(sessions, tenant, slug, GOOD_RECEIPTS, replied=12)
    await sms_channel(api, tenant, twilio, "sms")
    await add_deliveries(sessions, tenant, "sms", {"delivered": 30, "failed": 6, "undelivered": 4})
    await put_channel(api, tenant, "log", {"type": "log"})


# --- the verdicts -----------------------------------------------------------------------------


@pytest.mark.usefixtures("four_senders")
async def test_the_rating_and_the_receipts_make_the_health(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    senders = await senders_of(api, tenant)

    assert list(senders) == ["sms", "wa-green", "wa-red", "wa-yellow"]  # by id, no `log`
    assert {slug: s["health"] for slug, s in senders.items()} == {
        "wa-green": "good",
        "wa-yellow": "medium",
        "wa-red": "bad",
        "sms": "bad",
    }
    green = senders["wa-green"]
    assert green == {
        "channel": "wa-green",
        "type": "whatsapp",
        "health": "good",
        "reasons": [
            "WhatsApp rates the number's quality GREEN (high)",
            "2% of 50 sends in 7 days failed or were undelivered (under 3%)",
        ],
        "quality_rating": "GREEN",
        "messaging_limit_tier": "TIER_1K",
        "rating_error": None,
        "window_days": 7,
        "sent": 50,
        "delivered": 49,
        "read": 30,
        "failed": 1,
        "undelivered": 0,
        "replied": 12,
        "refused": 0,
        "failure_rate": 0.02,
        "delivery_rate": 0.98,
    }
    assert senders["wa-yellow"]["reasons"][0].startswith("WhatsApp rates the number's quality YE")
    assert senders["wa-red"]["reasons"][0].startswith("WhatsApp rates the number's quality RED")

    sms = senders["sms"]
    assert (sms["quality_rating"], sms["messaging_limit_tier"], sms["rating_error"]) == (
        None,
        None,
        None,
    )
    assert (sms["sent"], sms["delivered"], sms["failed"], sms["undelivered"]) == (40, 30, 6, 4)
    assert (sms["failure_rate"], sms["delivery_rate"]) == (0.25, 0.75)
    assert sms["reasons"] == [
        "25% of 40 sends in 7 days failed or were undelivered (bad from 10%)",
        "the SMS provider gives no quality rating: judged by receipts alone",
    ]


async def test_only_the_last_7_days_of_sends_that_left_count(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    sessions: async_sessionmaker[AsyncSession],
    twilio: FakeTwilio,
) -> None:
    await sms_channel(api, tenant, twilio, "sms")
    await add_deliveries(sessions, tenant, "sms", {"delivered": 25})
    # Failures of last month, sends still on their way, and sends refused at once.
    await add_deliveries(sessions, tenant, "sms", {"undelivered": 30}, days_ago=8)
    await add_deliveries(sessions, tenant, "sms", {"sending": 3, "retrying": 2, "unknown": 4})
    await add_deliveries(sessions, tenant, "sms", {}, refused=5)

    (sms,) = (await senders_of(api, tenant)).values()

    assert sms["health"] == "good"
    assert (sms["sent"], sms["delivered"], sms["failed"], sms["refused"]) == (25, 25, 0, 5)
    assert sms["failure_rate"] == 0.0
    assert sms["reasons"][-1].startswith("5 sends were refused by the provider at once")


async def test_few_sends_cannot_make_a_sender_medium_but_two_failures_make_it_bad(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    sessions: async_sessionmaker[AsyncSession],
    twilio: FakeTwilio,
) -> None:
    for slug, statuses in (
        ("quiet", {}),
        ("one-failure", {"delivered": 6, "failed": 1}),
        ("failing", {"delivered": 1, "undelivered": 2}),
    ):
        await sms_channel(api, tenant, twilio, slug)
        await add_deliveries(sessions, tenant, slug, statuses)

    senders = await senders_of(api, tenant)

    quiet, one, failing = senders["quiet"], senders["one-failure"], senders["failing"]
    assert (quiet["health"], quiet["sent"], quiet["failure_rate"]) == ("good", 0, None)
    assert quiet["reasons"][0] == (
        "too few sends to judge by receipts: 0 in 7 days (a rate needs 20)"
    )
    assert one["health"] == "good"
    assert one["reasons"][0] == (
        "too few sends to judge by receipts: 7 in 7 days, 1 failed or undelivered (a rate needs 20)"
    )
    assert failing["health"] == "bad"
    assert failing["reasons"][0] == (
        "2 of 3 sends in 7 days failed or were undelivered: already 10% of the 20 sends"
        " a rate needs"
    )


async def test_another_tenants_deliveries_never_count(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    make_tenant: Callable[[], Awaitable[TenantKeys]],
    sessions: async_sessionmaker[AsyncSession],
    whatsapp: StartWhatsApp,
) -> None:
    other = await make_tenant()
    fake = whatsapp()
    for owner in (tenant, other):
        await whatsapp_channel(api, owner, fake, "wa")  # the same channel id in both
    await add_deliveries(sessions, tenant, "wa", {"read": 25})
    await add_deliveries(sessions, other, "wa", {"failed": 40, "undelivered": 10})

    ours, theirs = [await senders_of(api, t) for t in (tenant, other)]

    assert (ours["wa"]["health"], ours["wa"]["sent"], ours["wa"]["failed"]) == ("good", 25, 0)
    assert (theirs["wa"]["health"], theirs["wa"]["sent"], theirs["wa"]["read"]) == ("bad", 50, 0)


# --- providers that cannot be asked -------------------------------------------------------------


async def test_a_rating_answered_with_a_500_leaves_the_verdict_to_the_receipts(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    sessions: async_sessionmaker[AsyncSession],
    whatsapp: StartWhatsApp,
) -> None:
    await whatsapp_channel(api, tenant, whatsapp(kind=BrokenWhatsApp), "wa")
    await whatsapp_channel(api, tenant, whatsapp("RED"), "wa-ok")
    await add_deliveries(sessions, tenant, "wa", {"read": 28, "failed": 2})  # 6.7%

    senders = await senders_of(api, tenant)

    wa = senders["wa"]
    assert (wa["quality_rating"], wa["messaging_limit_tier"]) == (None, None)
    assert wa["rating_error"].startswith("WhatsApp answered 500: Service temporarily unavailable")
    assert wa["health"] == "medium"
    assert wa["reasons"][0] == (
        "6.7% of 30 sends in 7 days failed or were undelivered (medium from 3%)"
    )
    assert wa["reasons"][1].startswith("no quality rating (WhatsApp answered 500")
    # The number beside it is rated all the same.
    assert senders["wa-ok"]["health"] == "bad"


async def test_a_provider_too_slow_to_rate_gives_a_rating_error_in_time(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    whatsapp: StartWhatsApp,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sender_health, "RATING_TIMEOUT_SECONDS", 0.3)
    await whatsapp_channel(api, tenant, whatsapp(kind=SlowWhatsApp), "wa")

    started = time.monotonic()
    (wa,) = (await senders_of(api, tenant)).values()

    assert time.monotonic() - started < 1.2
    assert wa["rating_error"] == "WhatsApp did not answer within 0.3 s"
    assert wa["health"] == "good"  # no sends, no rating: nothing against it


async def test_the_rating_call_keeps_to_the_egress_policy(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    time_env: WorkflowEnvironment,
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    whatsapp: StartWhatsApp,
) -> None:
    await whatsapp_channel(api, tenant, whatsapp(), "wa")
    production = settings.model_copy(update={"egress_allow": ""})

    async with api_client(production, sessions, time_env.client) as strict:
        answer = await strict.get(HEALTH, headers=tenant.headers())

    (wa,) = answer.json()["items"]
    assert wa["quality_rating"] is None
    assert "refused: loopback address" in wa["rating_error"]


# --- the filter, the CSV and who may ask ------------------------------------------------------


@pytest.mark.usefixtures("four_senders")
async def test_the_health_filter_keeps_the_senders_in_that_health(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    assert list(await senders_of(api, tenant, health="bad")) == ["sms", "wa-red"]
    assert list(await senders_of(api, tenant, health="medium")) == ["wa-yellow"]
    assert list(await senders_of(api, tenant, health="good")) == ["wa-green"]
    answer = await api.get(HEALTH, params={"health": "awful"}, headers=tenant.headers())
    assert answer.status_code == 422


@pytest.mark.usefixtures("four_senders")
async def test_the_csv_has_the_same_figures_as_the_json(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    senders = await senders_of(api, tenant)

    answer = await api.get(HEALTH, params={"format": "csv"}, headers=tenant.headers())

    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert answer.headers["content-disposition"] == 'attachment; filename="sender-health.csv"'
    reader = csv.DictReader(io.StringIO(answer.text))
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    rows = list(reader)
    assert [row["channel"] for row in rows] == list(senders)
    for row in rows:
        item = senders[row["channel"]]
        assert row["reasons"] == "; ".join(item["reasons"])
        for name in ("health", "quality_rating", "messaging_limit_tier", "rating_error"):
            assert row[name] == (item[name] or ""), name
        for name in ("window_days", "sent", "delivered", "read", "failed", "undelivered"):
            assert int(row[name]) == item[name], name
        assert (int(row["replied"]), int(row["refused"])) == (item["replied"], item["refused"])
        assert float(row["failure_rate"]) == item["failure_rate"]
        assert float(row["delivery_rate"]) == item["delivery_rate"]


@pytest.mark.usefixtures("four_senders")
async def test_accept_text_csv_asks_for_the_csv_and_format_has_the_last_word(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    as_csv = {**tenant.headers(), "Accept": "text/csv"}
    by_header = await api.get(HEALTH, params={"health": "bad"}, headers=as_csv)
    by_format = await api.get(
        HEALTH, params={"health": "bad", "format": "csv"}, headers=tenant.headers()
    )
    forced_json = await api.get(HEALTH, params={"format": "json"}, headers=as_csv)

    assert by_header.headers["content-type"].startswith("text/csv")
    assert by_header.text == by_format.text
    assert [row["channel"] for row in csv.DictReader(io.StringIO(by_header.text))] == [
        "sms",
        "wa-red",
    ]
    assert forced_json.headers["content-type"] == "application/json"
    assert by_header.headers["vary"] == forced_json.headers["vary"] == "Accept"


async def test_provider_text_cannot_become_a_spreadsheet_formula(
    api: httpx.AsyncClient, tenant: TenantKeys, whatsapp: StartWhatsApp
) -> None:
    # What a tenant's own endpoint (the channel's `base_url`) may answer.
    await whatsapp_channel(api, tenant, whatsapp('=HYPERLINK("http://x")', "@SUM(1+1)"), "wa")

    answer = await api.get(HEALTH, params={"format": "csv"}, headers=tenant.headers())

    (row,) = csv.DictReader(io.StringIO(answer.text))
    assert row["quality_rating"] == '\'=HYPERLINK("http://x")'
    assert row["messaging_limit_tier"] == "'@SUM(1+1)"
    assert not row["reasons"].startswith(("=", "+", "-", "@"))


async def test_only_admin_keys_see_sender_health(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    assert (await api.get(HEALTH)).status_code == 401
    for role in ("service", "agent"):
        assert (await api.get(HEALTH, headers=tenant.headers(role))).status_code == 403


# --- the rule and the cells, alone ------------------------------------------------------------


def counts(sent: int, failed: int = 0, undelivered: int = 0) -> SendCounts:
    return SendCounts(
        sent=sent, delivered=sent - failed - undelivered, failed=failed, undelivered=undelivered
    )


@pytest.mark.parametrize(
    ("rating", "sends", "expected"),
    [
        (Rating("GREEN"), counts(100, 2), "good"),  # 2%
        (Rating("GREEN"), counts(100, 2, 1), "medium"),  # 3%: medium from 3% on
        (Rating("GREEN"), counts(100, 9), "medium"),
        (Rating("GREEN"), counts(20, 1, 1), "bad"),  # 10%: bad from 10% on
        (Rating("YELLOW"), counts(100), "medium"),
        (Rating("YELLOW"), counts(100, 20), "bad"),  # the worst of the two
        (Rating("RED"), counts(0), "bad"),
        (Rating("UNKNOWN"), counts(100, 5), "medium"),  # not rated yet: receipts alone
        (Rating(None, error="WhatsApp answered 500"), counts(100, 12), "bad"),
        (Rating(None, error="WhatsApp answered 500"), counts(19, 1), "good"),
        (Rating("green"), counts(5), "good"),
    ],
)
def test_the_rule(rating: Rating, sends: SendCounts, expected: str) -> None:
    verdict = judge("whatsapp", rating, sends, 7)
    assert verdict.health == expected
    assert len(verdict.reasons) == 2


def test_the_deciding_reason_comes_first() -> None:
    verdict = judge("whatsapp", Rating("GREEN"), counts(50, 10), 7)
    assert verdict.reasons == [
        "20% of 50 sends in 7 days failed or were undelivered (bad from 10%)",
        "WhatsApp rates the number's quality GREEN (high)",
    ]


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        (None, ""),
        (["a", "b"], "a; b"),
        (["=cmd", "b"], "'=cmd; b"),
        ("+34600111222", "+34600111222"),  # a phone number is a number, never a formula
        ("-1", "-1"),
        ("+1+cmd", "'+1+cmd"),
        ("-2*A1", "'-2*A1"),
        ("@x", "'@x"),
        ("\tx", "'\tx"),
        ("GREEN", "GREEN"),
        (0.25, "0.25"),
        (3, "3"),
    ],
)
def test_a_csv_cell(value: object, cell: str) -> None:
    assert csv_cell(value) == cell


def test_csv_quoting_keeps_commas_quotes_and_new_lines_in_their_cell() -> None:
    item = SenderHealth.model_validate(
        {
            "channel": "wa",
            "type": "whatsapp",
            "health": "good",
            "reasons": ['a, "b"', "c\nd"],
            "quality_rating": None,
            "messaging_limit_tier": None,
            "rating_error": 'x, "y"',
            "window_days": 7,
            **SendCounts().model_dump(),
            "failure_rate": None,
            "delivery_rate": None,
        }
    )
    (row,) = csv.DictReader(io.StringIO(to_csv([item])))
    assert row["reasons"] == 'a, "b"; c\nd'
    assert row["rating_error"] == 'x, "y"'
    assert row["failure_rate"] == ""


@pytest.mark.parametrize(
    ("accept", "csv_wanted"),
    [
        ("", False),
        ("*/*", False),
        ("text/csv", True),
        ("text/csv, */*", True),
        ("application/json, text/csv", False),
        ("application/json;q=0.5, text/csv", True),
        ("text/csv;q=0", False),
        ("TEXT/CSV; q=0.9", True),
    ],
)
def test_which_accept_headers_ask_for_csv(accept: str, csv_wanted: bool) -> None:
    assert wants_csv(accept) is csv_wanted
