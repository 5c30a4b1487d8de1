"""The inbox page in a real browser: headless Chromium (Debian's, at /usr/bin/chromium)
driven by Playwright against the API served over HTTP, with a worker and a webhook channel.

Sign in, a message arriving while the page is open (no reload), open, reply, the journey
that a reply ends gone from the panel, a note only its author sees, transfer, end, and a
journey stopped from the panel. With `NUDGE_SCREENSHOTS=1` it saves the main screens to
`docs/inbox-*.png`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from nudge.settings import Settings
from tests.conftest import TenantKeys
from tests.test_inbox_api import HOOK, Inbox, set_up_inbox
from tests.utils.journeys import at_step, create, ended, enroll, in_progress, journey, send
from tests.utils.receivers import WebhookReceiver, free_port
from tests.utils.served import served_api
from tests.utils.waiting import received

try:
    from playwright.async_api import Browser, Page, async_playwright, expect
except ImportError:  # the dev extras are not installed
    async_playwright = None  # type: ignore[assignment]

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = os.environ.get("NUDGE_SCREENSHOTS") == "1"
LONG_WAIT = 600  # minutes: the journeys stay in progress for the whole test

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        async_playwright is None,
        reason="THE BROWSER TESTS DID NOT RUN: playwright is not installed"
        " (pip install -e '.[dev]')",
    ),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="THE BROWSER TESTS DID NOT RUN: no Chromium at /usr/bin/chromium"
        " (apt-get install -y chromium)",
    ),
    pytest.mark.usefixtures("worker"),
]


@pytest.fixture
def api_port() -> int:
    return free_port()


@pytest.fixture
def settings(settings: Settings, api_port: int) -> Settings:
    return settings.model_copy(update={"public_url": f"http://127.0.0.1:{api_port}"})


@pytest.fixture
def time_env(own_time_env: WorkflowEnvironment) -> WorkflowEnvironment:
    """The journeys wait for hours: a leftover one must not hold the shared server's clock."""
    return own_time_env


@pytest.fixture
async def base_url(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    time_env: WorkflowEnvironment,
    api_port: int,
) -> AsyncIterator[str]:
    async with served_api(settings, sessions, time_env.client, api_port) as url:
        yield url


@pytest.fixture
async def browser(base_url: str) -> AsyncIterator[Browser]:
    # Closed before the server: its event streams end with the pages.
    assert async_playwright is not None
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield launched
        finally:
            await launched.close()


async def shot(page: Page, name: str) -> None:
    if SCREENSHOTS:
        await page.screenshot(path=str(ROOT / "docs" / f"inbox-{name}.png"), full_page=True)


async def sign_in(browser: Browser, base_url: str, key: str, *, screenshot: bool = False) -> Page:
    context = await browser.new_context(viewport={"width": 1100, "height": 760})
    page = await context.new_page()
    await page.goto(f"{base_url}/inbox")
    await expect(page).to_have_url(f"{base_url}/inbox/sign-in")
    await page.get_by_label("Agent key").fill(key)
    if screenshot:
        await shot(page, "sign-in")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Your queue")).to_be_visible()
    return page


def waiting_journey(name: str, **settings: Any) -> dict[str, Any]:
    steps = [
        send("hello", f"{name} says hello"),
        {"id": "pause", "type": "wait", "minutes": LONG_WAIT},
    ]
    return journey(name, steps=steps, allow_agents_stop=True, **settings)


async def incoming(api: httpx.AsyncClient, tenant: TenantKeys, text: str) -> None:
    event = {
        "contact_id": "ada",
        "direction": "incoming",
        "channel": HOOK,
        "text": text,
        "message_id": uuid.uuid4().hex,
        # Given: the event path stamps the message and its interaction apart without it.
        "at": datetime.now(UTC).isoformat(),
    }
    answer = await api.post("/v1/events/messages", json=event, headers=tenant.headers("service"))
    assert answer.status_code == 202, answer.text


async def test_an_agent_works_an_interaction_in_the_browser(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    browser: Browser,
    base_url: str,
) -> None:
    inbox: Inbox = await set_up_inbox(api, tenant, webhook_receiver)
    # One journey an agent's reply ends, one that only a Stop ends.
    answered = await create(
        api, tenant, waiting_journey("Answered", exit_conditions=["outgoing_message"])
    )
    nurture = await create(api, tenant, waiting_journey("Nurture"))
    for each in (answered, nurture):
        assert (await enroll(api, tenant, each["id"])).status_code == 201
        await at_step(api, tenant, each["id"], "pause")
    await received(webhook_receiver, 2)

    grace = await sign_in(browser, base_url, inbox.keys["grace"], screenshot=True)
    queue = grace.locator("#queue-list")
    await expect(queue).to_contain_text("Nothing waiting here.")
    # Set on this page: still there after the message shows, so the page was not reloaded.
    await grace.evaluate("window.notReloaded = true")

    await incoming(api, tenant, "Hello, is anyone there? <b>now</b>")
    await expect(queue).to_contain_text("Hello, is anyone there? <b>now</b>", timeout=10_000)
    assert await grace.evaluate("window.notReloaded === true")
    await expect(grace.locator("#live-status")).to_contain_text("Updated")
    await shot(grace, "queue")

    # Open it, answer: it goes out on the webhook channel and the interaction is resolved.
    await queue.get_by_role("link").first.click()
    await expect(grace.get_by_role("heading", name="Case #")).to_contain_text("Ada")
    await grace.get_by_role("button", name="Open (take it)").click()
    await grace.get_by_label("Reply to Ada").fill("Grace here, how can I help?")
    await grace.get_by_role("button", name="Send reply").click()
    await expect(grace.locator("#status")).to_have_text("resolved")
    texts = [r.json["message"]["text"] for r in await received(webhook_receiver, 3)]
    assert "Grace here, how can I help?" in texts

    # The contact writes again while the interaction is open: it shows without a reload.
    await grace.evaluate("window.notReloaded = true")
    await incoming(api, tenant, "Where is my order?")
    conversation = grace.get_by_role("log")
    await expect(conversation).to_contain_text("Where is my order?", timeout=10_000)
    await expect(conversation).to_contain_text("Hello, is anyone there? <b>now</b>")
    assert await grace.evaluate("window.notReloaded === true")
    await expect(grace.locator("#status")).to_have_text("open")

    # A note of grace's on the contact.
    await grace.get_by_label("Add a note").fill("Prefers calls in the morning")
    await grace.get_by_role("button", name="Add note").click()
    await expect(grace.locator("#notes")).to_contain_text("Prefers calls in the morning")
    await grace.get_by_label("Tags (comma-separated)").fill("vip")
    await grace.get_by_role("button", name="Save tags").click()
    await shot(grace, "interaction")
    interaction_url = grace.url

    # The reply ended the journey with the `outgoing_message` exit: gone from the panel.
    done = await ended(api, tenant, answered["id"])
    assert done["end_reason"] == "outgoing message"
    panel = await grace.context.new_page()
    await panel.goto(f"{base_url}/inbox/contacts/ada/panel")
    workflows = panel.get_by_role("region", name="Workflows in progress")
    await expect(workflows).to_contain_text("Nurture")
    await expect(workflows).not_to_contain_text("Answered")
    await shot(panel, "panel")

    # Transferred to sales, whose only agent (alan) has it then: out of grace's queue.
    await grace.get_by_label("Transfer to queue").select_option("sales")
    await grace.get_by_role("button", name="Transfer").click()
    await expect(grace).to_have_url(f"{base_url}/inbox")
    await expect(grace.locator("#queue-list")).to_contain_text("Nothing waiting here.")

    # alan sees the interaction but not grace's note, and ends it with a disposition.
    alan = await sign_in(browser, base_url, inbox.keys["alan"])
    await alan.goto(interaction_url)
    await expect(alan.locator("#notes")).to_contain_text("No notes yet.")
    await expect(alan.locator("#notes")).not_to_contain_text("Prefers calls")
    await alan.get_by_label("Case", exact=True).fill("CS-7")
    await alan.get_by_label("Related to").fill("Acme")
    await alan.get_by_label("Notes (kept as your note)").fill("Order resent")
    await alan.get_by_role("button", name="End interaction").click()
    await expect(alan.locator("#status")).to_have_text("ended")
    await expect(alan.locator("#notes")).to_contain_text("Order resent")
    await expect(alan.locator("#case-state")).to_contain_text("queue sales")

    # grace stops the other journey from the panel, with a reason.
    await panel.get_by_label("Reason to stop Nurture").fill("The customer asked us to")
    await panel.get_by_role("button", name="Stop").click()
    await expect(workflows).to_contain_text("None in progress for Ada")
    assert await in_progress(api, tenant) == []
    [stopped] = [
        e
        for e in await in_progress(api, tenant, include_ended=True)
        if e["journey_id"] == nurture["id"]
    ]
    assert (stopped["state"], stopped["end_reason"]) == ("stopped", "The customer asked us to")
    assert stopped["ended_by"] == "agent grace"

    # Signed out: the pages send the browser to the sign-in form.
    await grace.get_by_role("button", name="Sign out").click()
    await expect(grace).to_have_url(f"{base_url}/inbox/sign-in")
