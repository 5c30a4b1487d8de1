"""The service history (`GET /v1/interactions/history`) and transcripts as PDF."""

from __future__ import annotations

import re
import zlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from nudge.api.routes.inbox_history import months_before, render_transcript
from nudge.store.interaction_history import (
    HistoryItem,
    Transcript,
    TranscriptLine,
    media_links,
)
from tests import test_inbox_api
from tests.conftest import TenantKeys, problems
from tests.test_inbox_api import HOOK, Inbox, Writes, ok

pytestmark = pytest.mark.usefixtures("worker")

# The inbox's tenant, queues, agents and keys, and contacts writing, as the API tests have them.
inbox = test_inbox_api.inbox
writes = test_inbox_api.writes

NASTY = "Hola 😀 🧑‍🚀 <script>alert('x')</script> \x07 \u202e tabs\tand (parens) \\ 中文"


def _page_text(pdf: bytes) -> bytes:
    """The file with its compressed streams inflated: fpdf2 compresses pages by default."""
    out = [pdf]
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.DOTALL):
        try:
            out.append(zlib.decompress(stream))
        except zlib.error:
            out.append(stream)
    return b"\n".join(out)


async def _history(api: httpx.AsyncClient, inbox: Inbox, **params: Any) -> Any:
    return await ok(api.get("/v1/interactions/history", params=params, headers=inbox.admin))


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def test_history_period_channel_paging_and_tenants(
    api: httpx.AsyncClient,
    inbox: Inbox,
    writes: Writes,
    make_tenant: Callable[[], Awaitable[TenantKeys]],
) -> None:
    now = datetime.now(UTC)
    recent = await writes(inbox.tenant, "ada", "hi", at=now - timedelta(days=10))
    older = await writes(
        inbox.tenant, "cy", "on another channel", channel="web", at=now - timedelta(days=20)
    )
    old = await writes(inbox.tenant, "bob", "long ago", at=now - timedelta(days=120))
    other = await make_tenant()
    await ok(api.put("/v1/contacts/ada", json={"name": "Ada"}, headers=other.headers()))
    await writes(other, "ada", "another tenant", at=now - timedelta(days=5))

    default = await _history(api, inbox)
    assert [i["id"] for i in default["items"]] == [recent, older]  # 3 months, newest first
    first = default["items"][0]
    assert first["contact_id"] == "ada" and first["channel"] == HOOK
    assert first["queue"] == "support" and first["status"] == "new" and first["agent"] is None

    on_hook = await _history(api, inbox, channel=HOOK)
    assert [i["id"] for i in on_hook["items"]] == [recent]
    since = _iso(now - timedelta(days=200))
    longer = await _history(api, inbox, **{"from": since})
    assert [i["id"] for i in longer["items"]] == [recent, older, old]
    window = {"from": _iso(now - timedelta(days=30)), "to": _iso(now - timedelta(days=15))}
    assert [i["id"] for i in (await _history(api, inbox, **window))["items"]] == [older]

    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"from": since, "limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = await _history(api, inbox, **params)
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [recent, older, old]

    theirs = await ok(api.get("/v1/interactions/history", headers=other.headers()))
    assert [i["contact_id"] for i in theirs["items"]] == ["ada"]
    assert theirs["items"][0]["id"] not in seen


async def test_history_refuses(api: httpx.AsyncClient, inbox: Inbox) -> None:
    now = datetime.now(UTC)
    backwards = {"from": _iso(now), "to": _iso(now - timedelta(days=1))}
    answer = await api.get("/v1/interactions/history", params=backwards, headers=inbox.admin)
    assert "query.from" in problems(answer)
    too_long = {"from": _iso(now - timedelta(days=400))}
    answer = await api.get("/v1/interactions/history", params=too_long, headers=inbox.admin)
    assert "query.from" in problems(answer)
    answer = await api.get("/v1/interactions/history", headers=inbox.agent("grace"))
    assert answer.status_code == 403


def test_months_before() -> None:
    assert months_before(datetime(2026, 5, 31, 12, tzinfo=UTC), 3) == datetime(
        2026, 2, 28, 12, tzinfo=UTC
    )
    assert months_before(datetime(2026, 2, 10, tzinfo=UTC), 3) == datetime(2025, 11, 10, tzinfo=UTC)


async def test_transcript_pdf(
    api: httpx.AsyncClient,
    inbox: Inbox,
    writes: Writes,
    make_tenant: Callable[[], Awaitable[TenantKeys]],
) -> None:
    found = await writes(inbox.tenant, "ada", NASTY)
    await writes(inbox.tenant, "ada", "and a second one")
    grace = inbox.agent("grace")
    opened = await ok(api.post(f"/v1/interactions/{found}/open", headers=grace))
    disposition = {"case": "CS-1042", "related_to": "Acme", "notes": "Refunded <b>"}
    body = {"disposition": disposition}
    await ok(api.post(f"/v1/interactions/{found}/end", json=body, headers=grace))
    path = f"/v1/interactions/{found}/transcript.pdf"

    for who in (inbox.admin, grace):
        answer = await api.get(path, headers=who)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/pdf"
        assert answer.content.startswith(b"%PDF")
        assert f"Case #{opened['case_number']}".encode() in _page_text(answer.content)

    history = await _history(api, inbox)
    ended = next(i for i in history["items"] if i["id"] == found)
    assert ended["status"] == "ended" and ended["agent"] == "grace"
    assert ended["ended_by"] == "grace" and ended["disposition"]["case"] == "CS-1042"

    # alan is in the queue but never had it; another tenant never sees it.
    assert (await api.get(path, headers=inbox.agent("alan"))).status_code == 403
    assert (await api.get(path, headers=inbox.agent("edsger"))).status_code == 403
    other = await make_tenant()
    assert (await api.get(path, headers=other.headers())).status_code == 404
    missing = "/v1/interactions/nope/transcript.pdf"
    assert (await api.get(missing, headers=inbox.admin)).status_code == 404


def _document(text: str, links: list[str]) -> Transcript:
    at = datetime(2026, 3, 1, 10, tzinfo=UTC)
    item = HistoryItem.model_validate(
        {
            "id": "i1",
            "case_number": 77,
            "contact_id": "ada",
            "contact_name": "Ada 😀",
            "channel": HOOK,
            "channel_kind": "chat",
            "queue": "support",
            "agent": "grace",
            "status": "ended",
            "received_at": at,
            "ended_at": at,
            "ended_by": "grace",
            "disposition": {"case": "CS-1", "notes": "émoji 🎉"},
        }
    )
    line = TranscriptLine(at=at, direction="incoming", who="Ada 😀", text=text, links=links)
    return Transcript(item, [line], complete=False)


@pytest.mark.parametrize("unicode_font", [True, False])
def test_render_survives_customer_text(unicode_font: bool) -> None:
    links = ["https://media.example/" + "a" * 1_500, "javascript:alert(1)"]
    pdf = render_transcript(
        _document(NASTY + " " + "x" * 3_000, links), compress=False, unicode_font=unicode_font
    )
    assert pdf.startswith(b"%PDF") and b"(Case #77)" in pdf
    if not unicode_font:
        # Core fonts: Latin-1 only; the rest is "?", the markup stays text.
        assert b"<script>" in pdf and "\U0001f600".encode() not in pdf
    # Only the web address is a link annotation.
    assert b"/URI (https://media.example/" in pdf and b"/URI (javascript" not in pdf


def test_media_links() -> None:
    assert media_links({"kind": "image", "image": {"url": "https://x/i.png"}}) == [
        "https://x/i.png"
    ]
    card = {"card": {"image_url": "https://x/c.png"}, "media": ["https://x/c.png", 3, ""]}
    assert media_links(card) == ["https://x/c.png"]
    assert media_links(None) == [] and media_links({"text": "hi"}) == []
