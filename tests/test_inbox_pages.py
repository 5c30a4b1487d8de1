"""The inbox web page through the ASGI app: sign-in and its cookie, CSRF, the queue, a reply
that goes out, and a contact's words shown as text, never as markup."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from nudge.settings import Settings
from tests import test_inbox_api
from tests.conftest import api_client
from tests.test_inbox_api import Inbox, Writes
from tests.utils.receivers import WebhookReceiver
from tests.utils.waiting import received

pytestmark = pytest.mark.usefixtures("worker")

# The inbox's tenant, queues, agents and keys, and contacts writing, as the API tests have them.
inbox = test_inbox_api.inbox
writes = test_inbox_api.writes
CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


def csrf_of(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found, page.text
    return found.group(1)


async def signed_in(client: httpx.AsyncClient, key: str) -> httpx.Response:
    """Sign in like a browser: the form (its token), then the key posted with it."""
    form = await client.get("/inbox/sign-in")
    assert form.status_code == 200, form.text
    return await client.post("/inbox/sign-in", data={"key": key, "csrf": csrf_of(form)})


@pytest.fixture
async def browser(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], time_env: WorkflowEnvironment
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of its own, which keeps its cookies as a browser would."""
    async with api_client(settings, sessions, time_env.client) as client:
        yield client


async def test_sign_in_sets_a_strict_http_only_cookie_on_the_inbox(
    browser: httpx.AsyncClient, inbox: Inbox
) -> None:
    first = await browser.get("/inbox")
    assert (first.status_code, first.headers["location"]) == (303, "/inbox/sign-in")

    answer = await signed_in(browser, inbox.keys["grace"])
    assert (answer.status_code, answer.headers["location"]) == (303, "/inbox")
    [cookie] = [c for c in answer.headers.get_list("set-cookie") if c.startswith("nudge_inbox=")]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "path", "samesite"} <= attributes
    assert "Path=/inbox" in cookie and "SameSite=strict" in cookie
    assert "secure" not in attributes  # plain HTTP here; see the HTTPS test below

    page = await browser.get("/inbox")
    assert page.status_code == 200
    assert "Grace (grace)" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]

    # Signed out: the cookie is gone and the pages send the browser to the sign-in again.
    out = await browser.post("/inbox/sign-out", data={"csrf": csrf_of(page)})
    assert (out.status_code, out.headers["location"]) == (303, "/inbox/sign-in")
    assert (await browser.get("/inbox")).status_code == 303


async def test_over_https_the_cookie_is_secure(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    time_env: WorkflowEnvironment,
    inbox: Inbox,
) -> None:
    async with api_client(settings, sessions, time_env.client) as client:
        client.base_url = httpx.URL("https://nudge.test")
        answer = await signed_in(client, inbox.keys["grace"])
    assert answer.status_code == 303
    [cookie] = [c for c in answer.headers.get_list("set-cookie") if c.startswith("nudge_inbox=")]
    assert "Secure" in cookie


async def test_a_wrong_key_or_one_of_no_agent_is_refused(
    browser: httpx.AsyncClient, inbox: Inbox
) -> None:
    wrong = await signed_in(browser, "nk_not-a-key")
    assert wrong.status_code == 401
    assert "Unknown or revoked key" in wrong.text
    assert not any(c.startswith("nudge_inbox=") for c in wrong.headers.get_list("set-cookie"))

    admin = await signed_in(browser, inbox.tenant.keys["admin"])
    assert admin.status_code == 403
    assert "acts as no agent" in admin.text
    # edsger's profile has no inbox.
    edsger = await signed_in(browser, inbox.keys["edsger"])
    assert edsger.status_code == 403
    assert "does not include inbox" in edsger.text

    # A cookie with a made-up key is no session either.
    browser.cookies.set("nudge_inbox", "nk_made-up", domain="nudge.test", path="/inbox")
    assert (await browser.get("/inbox")).status_code == 303


async def test_posts_without_the_csrf_token_are_refused(
    browser: httpx.AsyncClient, inbox: Inbox, writes: Writes
) -> None:
    form = await browser.get("/inbox/sign-in")
    refused = await browser.post("/inbox/sign-in", data={"key": inbox.keys["grace"]})
    assert refused.status_code == 403
    assert (await signed_in(browser, inbox.keys["grace"])).status_code == 303
    first = await writes(inbox.tenant, "ada", "Hello?")

    for data in ({}, {"csrf": "0" * 64}, {"csrf": csrf_of(form)}):  # the pre-session's
        answer = await browser.post(f"/inbox/interactions/{first}/open", data=data)
        assert answer.status_code == 403, data
    page = await browser.get(f"/inbox/interactions/{first}")
    assert "Open (take it)" in page.text  # nothing happened


async def test_the_queue_lists_an_interaction_and_a_reply_goes_out(
    browser: httpx.AsyncClient,
    api: httpx.AsyncClient,
    inbox: Inbox,
    writes: Writes,
    webhook_receiver: WebhookReceiver,
) -> None:
    await signed_in(browser, inbox.keys["grace"])
    first = await writes(inbox.tenant, "ada", "Where is my parcel?")
    queue = await browser.get("/inbox")
    assert f'href="/inbox/interactions/{first}"' in queue.text
    assert "Where is my parcel?" in queue.text
    assert (await browser.get("/inbox?queue=support&sort=priority")).text.count(first) == 1
    assert first not in (await browser.get("/inbox?status=ended")).text
    assert first not in (await browser.get("/inbox?tag=vip")).text

    page = await browser.get(f"/inbox/interactions/{first}")
    token = csrf_of(page)
    opened = await browser.post(f"/inbox/interactions/{first}/open", data={"csrf": token})
    assert (opened.status_code, opened.headers["location"]) == (
        303,
        f"/inbox/interactions/{first}",
    )
    page = await browser.get(f"/inbox/interactions/{first}")
    key = re.search(r'name="reply_key" value="(\w+)"', page.text)
    assert key
    answer = {"csrf": token, "text": "On its way, {{ ada }}", "reply_key": key.group(1)}
    replied = await browser.post(f"/inbox/interactions/{first}/reply", data=answer)
    assert replied.status_code == 303, replied.text
    # The same form posted twice sends once.
    assert (await browser.post(f"/inbox/interactions/{first}/reply", data=answer)).is_redirect
    [sent] = await received(webhook_receiver, 1)
    assert sent.json["message"]["text"] == "On its way, {{ ada }}"
    detail = await api.get(f"/v1/interactions/{first}", headers=inbox.agent("grace"))
    assert (detail.json()["status"], detail.json()["assignee"]) == ("resolved", "grace")

    # Tags, priority and a note, each a form of the page.
    await browser.post(
        f"/inbox/interactions/{first}/tags", data={"csrf": token, "tags": "vip, late"}
    )
    await browser.post(
        f"/inbox/interactions/{first}/priority", data={"csrf": token, "priority": "urgent"}
    )
    await browser.post(f"/inbox/interactions/{first}/notes", data={"csrf": token, "text": "Calm"})
    page = await browser.get(f"/inbox/interactions/{first}")
    assert "priority urgent" in page.text and ">late<" in page.text and ">vip<" in page.text
    assert "Calm" in page.text
    assert first in (await browser.get("/inbox?tag=vip&status=resolved")).text

    # A refusal shows on the page: alan cannot reply to grace's interaction.
    other = httpx.AsyncClient(transport=browser._transport, base_url="http://nudge.test")
    async with other:
        await signed_in(other, inbox.keys["alan"])
        token = csrf_of(await other.get(f"/inbox/interactions/{first}"))
        data = {"csrf": token, "queue": "sales"}
        refused = await other.post(f"/inbox/interactions/{first}/transfer", data=data)
    assert refused.status_code == 409
    assert "assigned to &#39;grace&#39;" in refused.text


async def test_customer_text_is_escaped(
    browser: httpx.AsyncClient, inbox: Inbox, writes: Writes
) -> None:
    await signed_in(browser, inbox.keys["grace"])
    attack = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    first = await writes(inbox.tenant, "ada", attack)
    for path in ("/inbox", f"/inbox/interactions/{first}"):
        page = await browser.get(path)
        assert "<script>alert" not in page.text and "<img src=x" not in page.text
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x" in page.text
        assert '<script src="/inbox/static/inbox.js" defer></script>' in page.text


async def test_the_panel_may_be_framed_by_the_same_origin_only(
    browser: httpx.AsyncClient, inbox: Inbox
) -> None:
    await signed_in(browser, inbox.keys["grace"])
    panel = await browser.get("/inbox/contacts/ada/panel")
    assert panel.status_code == 200
    assert "frame-ancestors 'self'" in panel.headers["content-security-policy"]
    assert "None in progress for Ada" in panel.text
    assert (
        (await browser.get("/inbox/static/inbox.js"))
        .headers["content-type"]
        .startswith("text/javascript")
    )
    assert (await browser.get("/inbox/static/nope.js")).status_code == 404
