"""The inbox through the HTTP API: agents, queues and access profiles (admins), interactions
from a contact's first message to their end (agents), notes, and the service metrics."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from nudge.models.db import transaction
from nudge.models.events import MessageEvent
from nudge.runs.inbox import literal_template
from nudge.store.directory import get_contact
from nudge.store.interactions import on_incoming_message
from nudge.store.messages import add_event_message
from nudge.templating import render
from tests.conftest import TenantKeys, problems
from tests.utils.journeys import at_step, create, ended, enroll, in_progress, journey, send
from tests.utils.receivers import SmtpSink, WebhookReceiver
from tests.utils.waiting import eventually, received

# Every answer sends a notification, whose run a worker takes.
pytestmark = pytest.mark.usefixtures("worker")

HOOK = "hook"  # the chat channel contacts write on (a webhook to the test's receiver)
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Inbox:
    """A tenant with two queues and three agents, each with a key of their own.

    `support` is the default queue of `hook`; grace and alan are in it, alan alone in
    `sales`; edsger has a profile without the inbox."""

    tenant: TenantKeys
    keys: dict[str, str]

    def agent(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}

    @property
    def admin(self) -> dict[str, str]:
        return self.tenant.headers()


async def ok(response: Awaitable[httpx.Response], status: int = 200) -> Any:
    answer = await response
    assert answer.status_code == status, answer.text
    return answer.json() if answer.content else None


async def agent_key(api: httpx.AsyncClient, tenant: TenantKeys, agent: str) -> str:
    body = {"role": "agent", "agent": agent}
    created = await ok(api.post("/v1/api-keys", json=body, headers=tenant.headers()), 201)
    key: str = created["api_key"]
    return key


async def set_up_inbox(api: httpx.AsyncClient, tenant: TenantKeys, hook: WebhookReceiver) -> Inbox:
    admin = tenant.headers()
    for contact, phone in (("ada", "+34600111222"), ("bob", "+34600111333"), ("cy", None)):
        body = {"name": contact.title(), "email": f"{contact}@example.com", "phone": phone}
        await ok(api.put(f"/v1/contacts/{contact}", json=body, headers=admin))
    for channel in (HOOK, "inbox"):
        body = {"type": "webhook", "config": {"url": hook.url}}
        await ok(api.put(f"/v1/channels/{channel}", json=body, headers=admin))
    await ok(
        api.put(
            "/v1/queues/support",
            json={"name": "Support", "default_for_channels": [HOOK]},
            headers=admin,
        )
    )
    await ok(api.put("/v1/queues/sales", json={"name": "Sales"}, headers=admin))
    front = {"name": "Front line", "modules": ["journeys", "inbox"]}
    await ok(api.put("/v1/access-profiles/front", json=front, headers=admin))
    reports = {"name": "Reports", "description": "Metrics only", "modules": ["metrics"]}
    await ok(api.put("/v1/access-profiles/reports", json=reports, headers=admin))
    agents = {
        "grace": {"queues": ["support"], "profile": "front"},
        "alan": {"queues": ["support", "sales"]},
        "edsger": {"queues": ["support"], "profile": "reports"},
    }
    keys = {}
    for name, more in agents.items():
        body = {"name": name.title(), "email": f"{name}@corp.example", **more}
        await ok(api.put(f"/v1/agents/{name}", json=body, headers=admin))
        keys[name] = await agent_key(api, tenant, name)
    return Inbox(tenant, keys)


@pytest.fixture
async def inbox(
    api: httpx.AsyncClient, tenant: TenantKeys, webhook_receiver: WebhookReceiver
) -> Inbox:
    return await set_up_inbox(api, tenant, webhook_receiver)


Writes = Callable[..., Awaitable[str]]


@pytest.fixture
def writes(sessions: async_sessionmaker[AsyncSession]) -> Writes:
    """The contact writes on a channel: the message in their history and its interaction,
    as the event path stores them (`on_incoming_message`); the interaction's id."""

    async def write(
        tenant: TenantKeys,
        contact: str,
        text: str,
        *,
        channel: str = HOOK,
        at: datetime | None = None,
    ) -> str:
        when = at or datetime.now(UTC)
        event = MessageEvent(
            contact_id=contact,
            direction="incoming",
            channel=channel,
            text=text,
            message_id=uuid.uuid4().hex,
            at=when,
        )
        async with transaction(sessions) as session:
            found = await get_contact(session, tenant.id, contact)
            await add_event_message(session, tenant.id, found, event)
            interaction = await on_incoming_message(session, tenant.id, found, channel, text, when)
            return interaction.id

    return write


async def listed(
    api: httpx.AsyncClient, headers: dict[str, str], **params: Any
) -> list[dict[str, Any]]:
    page = await ok(api.get("/v1/interactions", params=params, headers=headers))
    items: list[dict[str, Any]] = page["items"]
    return items


async def detail(api: httpx.AsyncClient, headers: dict[str, str], interaction: str) -> Any:
    return await ok(api.get(f"/v1/interactions/{interaction}", headers=headers))


async def act(
    api: httpx.AsyncClient,
    headers: dict[str, str],
    interaction: str,
    action: str,
    body: dict[str, Any] | None = None,
    status: int = 200,
) -> Any:
    return await ok(
        api.post(f"/v1/interactions/{interaction}/{action}", json=body, headers=headers), status
    )


# Admin: agents, queues, access profiles ------------------------------------------------------


async def test_admins_manage_agents_queues_and_profiles(
    api: httpx.AsyncClient, inbox: Inbox
) -> None:
    admin = inbox.admin
    grace = await ok(api.get("/v1/agents/grace", headers=admin))
    assert (grace["queues"], grace["profile"], grace["email"]) == (
        ["support"],
        "front",
        "grace@corp.example",
    )
    agents = await ok(api.get("/v1/agents", headers=admin))
    assert [a["id"] for a in agents["items"]] == ["alan", "edsger", "grace"]
    support = await ok(api.get("/v1/queues/support", headers=admin))
    assert (support["default_for_channels"], support["agents"]) == (
        [HOOK],
        ["alan", "edsger", "grace"],
    )
    front = await ok(api.get("/v1/access-profiles/front", headers=admin))
    assert front["modules"] == ["inbox", "journeys"]  # in the product's order
    profiles = await ok(api.get("/v1/access-profiles", headers=admin))
    assert [p["id"] for p in profiles["items"]] == ["front", "reports"]

    # What they name must exist; a channel has one default queue.
    wrong = await api.put(
        "/v1/agents/grace",
        json={
            "name": "G",
            "email": "g@corp.example",
            "queues": ["support", "nope"],
            "profile": "x",
        },
        headers=admin,
    )
    assert problems(wrong) == {"body.queues.1": "no queue 'nope'"}
    wrong = await api.put(
        "/v1/agents/grace",
        json={"name": "G", "email": "g@corp.example", "profile": "x"},
        headers=admin,
    )
    assert problems(wrong) == {"body.profile": "no access profile 'x'"}
    taken = await api.put(
        "/v1/queues/sales", json={"name": "Sales", "default_for_channels": [HOOK]}, headers=admin
    )
    assert taken.status_code == 409 and "'support'" in taken.json()["detail"], taken.text
    unknown = await api.put(
        "/v1/queues/sales", json={"name": "Sales", "default_for_channels": ["zzz"]}, headers=admin
    )
    assert problems(unknown) == {"body.default_for_channels.0": "no channel 'zzz'"}

    # A profile in use is not deleted: the answer names who has it.
    refused = await api.delete("/v1/access-profiles/front", headers=admin)
    assert refused.status_code == 409, refused.text
    assert "'grace'" in refused.json()["detail"]
    body = {"name": "Grace", "email": "grace@corp.example", "queues": ["support"]}
    await ok(api.put("/v1/agents/grace", json=body, headers=admin))
    await ok(api.delete("/v1/access-profiles/front", headers=admin), 204)
    assert (await api.get("/v1/access-profiles/front", headers=admin)).status_code == 404

    # Only admins manage them.
    for role in ("service", "agent"):
        denied = await api.get("/v1/agents", headers=inbox.tenant.headers(role))
        assert denied.status_code == 403, denied.text
    await ok(api.delete("/v1/agents/edsger", headers=admin), 204)
    assert (await api.get("/v1/agents/edsger", headers=admin)).status_code == 404


async def test_the_inbox_is_for_agent_keys_bound_to_an_agent_whose_profile_has_it(
    api: httpx.AsyncClient, inbox: Inbox, writes: Writes
) -> None:
    interaction = await writes(inbox.tenant, "ada", "Hello?")
    # A profile without `inbox`: every inbox route is refused.
    for call in (
        api.get("/v1/interactions", headers=inbox.agent("edsger")),
        api.get(f"/v1/interactions/{interaction}", headers=inbox.agent("edsger")),
        api.post(f"/v1/interactions/{interaction}/open", headers=inbox.agent("edsger")),
        api.get("/v1/contacts/ada/notes", headers=inbox.agent("edsger")),
    ):
        denied = await call
        assert denied.status_code == 403, denied.text
        assert "does not include inbox" in denied.json()["detail"]
    # A key bound to no agent, or to an agent that does not exist; a service key.
    ghost = await agent_key(api, inbox.tenant, "ghost")
    for headers in (
        inbox.tenant.headers("agent"),
        {"Authorization": f"Bearer {ghost}"},
        inbox.tenant.headers("service"),
    ):
        denied = await api.get("/v1/interactions", headers=headers)
        assert denied.status_code == 403, denied.text
    # Admins read every interaction but act as no agent.
    assert [i["id"] for i in await listed(api, inbox.admin)] == [interaction]
    await act(api, inbox.admin, interaction, "open", status=403)
    # A profile given back the inbox lets the agent in at once.
    reports = {"name": "Reports", "modules": ["metrics", "inbox"]}
    await ok(api.put("/v1/access-profiles/reports", json=reports, headers=inbox.admin))
    assert [i["id"] for i in await listed(api, inbox.agent("edsger"))] == [interaction]


# Interactions --------------------------------------------------------------------------------


async def test_an_interaction_goes_new_open_resolved_ended_and_a_later_message_opens_another(
    api: httpx.AsyncClient, inbox: Inbox, writes: Writes, webhook_receiver: WebhookReceiver
) -> None:
    grace = inbox.agent("grace")
    first = await writes(inbox.tenant, "ada", "My order is late")
    assert await writes(inbox.tenant, "ada", "Order 42") == first
    [item] = await listed(api, grace)
    assert item["id"] == first
    assert (item["status"], item["queue"], item["assignee"], item["unread"]) == (
        "new",
        "support",
        None,
        2,
    )
    assert (item["channel_kind"], item["digital_id"], item["preview"]) == (
        "chat",
        "ada",
        "Order 42",
    )
    case = item["case_number"]

    async def conversation(count: int) -> list[tuple[str, str]]:
        messages = (await detail(api, grace, first))["conversation"]
        return [(m["direction"], m["text"]) for m in messages] if len(messages) == count else []

    opened = await act(api, grace, first, "open")
    assert (opened["status"], opened["assignee"], opened["unread"]) == ("new", "grace", 0)
    answered = await act(api, grace, first, "reply", {"text": "Looking into it, {{ ada }}"})
    assert (answered["status"], answered["unread"]) == ("resolved", 0)
    [sent] = await received(webhook_receiver, 1)
    # Sent as written: an agent's words are no template.
    assert sent.json["message"]["text"] == "Looking into it, {{ ada }}"
    assert sent.json["recipient"]["external_id"] == "ada"
    # In the history once sent (the contact's answer comes after it).
    await eventually(lambda: conversation(3), message="the answer is in the history")

    await writes(inbox.tenant, "ada", "Thanks, any news?")
    again = await detail(api, grace, first)
    assert (again["status"], again["unread"], again["assignee"]) == ("open", 1, "grace")
    await act(api, grace, first, "reply", {"text": "Shipped today"})
    await act(api, grace, first, "resolve")
    done = await act(api, grace, first, "end", {"disposition": {"case": "CS-1", "notes": "late"}})
    assert (done["status"], done["assignee"], done["ended_by"]) == ("ended", None, "grace")
    assert done["disposition"] == {"case": "CS-1", "related_to": None, "notes": "late"}
    assert await listed(api, grace) == []  # out of the queue
    assert [i["id"] for i in await listed(api, grace, status="ended")] == [first]
    await act(api, grace, first, "reply", {"text": "?"}, status=409)

    # The conversation of the first case, once both answers are in the history.
    await received(webhook_receiver, 2)

    assert await eventually(lambda: conversation(5)) == [
        ("incoming", "My order is late"),
        ("incoming", "Order 42"),
        ("outgoing", "Looking into it, {{ ada }}"),
        ("incoming", "Thanks, any news?"),
        ("outgoing", "Shipped today"),
    ]
    shown = await detail(api, grace, first)
    kinds = [event["kind"] for event in shown["history"]]
    assert kinds == [
        "queued",
        "assigned",
        "replied",
        "first_response",
        "reopened",
        "replied",
        "ended",
    ]

    # Ended for good: the next message opens a new case, for any agent of the queue.
    second = await writes(inbox.tenant, "ada", "Me again")
    assert second != first
    [fresh] = await listed(api, inbox.agent("alan"))
    assert (fresh["id"], fresh["status"], fresh["assignee"], fresh["case_number"]) == (
        second,
        "new",
        None,
        case + 1,
    )
    assert [m["text"] for m in (await detail(api, grace, second))["conversation"]] == ["Me again"]


async def test_the_conversation_shows_who_answered(
    api: httpx.AsyncClient, inbox: Inbox, writes: Writes, webhook_receiver: WebhookReceiver
) -> None:
    grace = inbox.agent("grace")
    interaction = await writes(inbox.tenant, "ada", "Hi")
    await act(api, grace, interaction, "open")
    await act(api, grace, interaction, "reply", {"text": "Hello Ada"})
    await received(webhook_receiver, 1)

    async def answered() -> list[Any]:
        messages = (await detail(api, grace, interaction))["conversation"]
        return [(m["direction"], m["text"], m["agent"]) for m in messages if len(messages) == 2]

    assert await eventually(answered) == [
        ("incoming", "Hi", None),
        ("outgoing", "Hello Ada", "grace"),
    ]
    # A retried answer (the same Idempotency-Key) is sent once.
    for _ in range(2):
        await ok(
            api.post(
                f"/v1/interactions/{interaction}/reply",
                json={"text": "Anything else?"},
                headers={**grace, "Idempotency-Key": "answer-2"},
            )
        )
    history = (await detail(api, grace, interaction))["history"]
    assert [e["kind"] for e in history].count("replied") == 2
    await received(webhook_receiver, 2)


async def test_two_agents_open_it_at_once_one_wins_and_the_other_learns_who(
    api: httpx.AsyncClient, inbox: Inbox, writes: Writes
) -> None:
    interaction = await writes(inbox.tenant, "ada", "Anyone?")
    answers = await asyncio.gather(
        *(
            api.post(f"/v1/interactions/{interaction}/open", headers=inbox.agent(name))
            for name in ("grace", "alan")
        )
    )
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    [winner] = [a.json()["assignee"] for a in answers if a.status_code == 200]
    [loser] = [a for a in answers if a.status_code == 409]
    assert f"assigned to {winner!r}" in loser.json()["detail"]
    # The loser cannot act on it either; the winner opening again changes nothing.
    other = inbox.agent("alan" if winner == "grace" else "grace")
    await act(api, other, interaction, "reply", {"text": "Me!"}, status=409)
    await act(api, other, interaction, "end", status=409)
    assert (await act(api, inbox.agent(winner), interaction, "open"))["assignee"] == winner
    history = (await detail(api, inbox.admin, interaction))["history"]
    assert [e["kind"] for e in history] == ["queued", "assigned"]


async def test_a_transfer_to_a_queue_with_one_agent_assigns_it_to_them(
    api: httpx.AsyncClient, inbox: Inbox, writes: Writes
) -> None:
    grace, alan = inbox.agent("grace"), inbox.agent("alan")
    interaction = await writes(inbox.tenant, "ada", "I want to buy")
    await act(api, grace, interaction, "open")
    moved = await act(api, grace, interaction, "transfer", {"queue": "sales"})
    assert (moved["queue"], moved["assignee"], moved["status"]) == ("sales", "alan", "new")
    # Grace is not in sales: it is out of her sight now.
    assert await listed(api, grace) == []
    assert (await api.get(f"/v1/interactions/{interaction}", headers=grace)).status_code == 404
    [mine] = await listed(api, alan, queue="sales", assignee="me")
    assert mine["id"] == interaction
    # Back to a queue of three agents: nobody's until one opens it.
    back = await act(api, alan, interaction, "transfer", {"queue": "support"})
    assert (back["queue"], back["assignee"]) == ("support", None)
    unknown = await api.post(
        f"/v1/interactions/{interaction}/transfer", json={"queue": "nope"}, headers=alan
    )
    assert problems(unknown) == {"body.queue": "no queue 'nope'"}
    denied = await api.get("/v1/interactions", params={"queue": "sales"}, headers=grace)
    assert denied.status_code == 403, denied.text


async def test_notes_are_seen_by_their_author_only(
    api: httpx.AsyncClient, inbox: Inbox, writes: Writes
) -> None:
    grace, alan = inbox.agent("grace"), inbox.agent("alan")
    interaction = await writes(inbox.tenant, "ada", "Hello")
    body = {"text": "Prefers mornings", "interaction_id": interaction}
    note = await ok(api.post("/v1/contacts/ada/notes", json=body, headers=grace), 201)
    assert (note["agent"], note["interaction_id"]) == ("grace", interaction)
    await ok(api.post("/v1/contacts/ada/notes", json={"text": "Alan's own"}, headers=alan), 201)
    await act(api, grace, interaction, "open")
    await act(api, grace, interaction, "end", {"disposition": {"notes": "Call back Friday"}})

    mine = await ok(api.get("/v1/contacts/ada/notes", headers=grace))
    assert [n["text"] for n in mine["items"]] == ["Call back Friday", "Prefers mornings"]
    theirs = await ok(api.get("/v1/contacts/ada/notes", headers=alan))
    assert [n["text"] for n in theirs["items"]] == ["Alan's own"]
    assert [n["text"] for n in (await detail(api, alan, interaction))["notes"]] == ["Alan's own"]
    wrong = await api.post(
        "/v1/contacts/bob/notes", json={"text": "x", "interaction_id": interaction}, headers=grace
    )
    assert problems(wrong) == {"body.interaction_id": "not an interaction of this contact"}
    assert (await api.get("/v1/contacts/nobody/notes", headers=grace)).status_code == 404


async def test_tags_priority_filters_and_sorts(
    api: httpx.AsyncClient, inbox: Inbox, writes: Writes
) -> None:
    grace = inbox.agent("grace")
    body = {"type": "email", "config": {"host": "127.0.0.1", "from_address": "s@corp.example"}}
    await ok(api.put("/v1/channels/mail", json=body, headers=inbox.admin))
    await ok(
        api.put(
            "/v1/queues/support",
            json={"name": "Support", "default_for_channels": [HOOK, "mail"]},
            headers=inbox.admin,
        )
    )
    old = datetime.now(UTC) - timedelta(minutes=5)
    chat = await writes(inbox.tenant, "ada", "chat", at=old)
    mail = await writes(inbox.tenant, "bob", "mail", channel="mail")
    tagged = await ok(
        api.put(
            f"/v1/interactions/{chat}/tags",
            json={"tags": ["vip", " billing ", "vip"]},
            headers=grace,
        )
    )
    assert tagged["tags"] == ["billing", "vip"]
    urgent = await ok(
        api.put(f"/v1/interactions/{chat}/priority", json={"priority": "urgent"}, headers=grace)
    )
    assert urgent["priority"] == "urgent"

    def ids(items: list[dict[str, Any]]) -> list[str]:
        return [item["id"] for item in items]

    assert ids(await listed(api, grace)) == [mail, chat]  # newest message first
    assert ids(await listed(api, grace, sort="priority")) == [chat, mail]
    assert ids(await listed(api, grace, sort="channel")) == [chat, mail]  # chat before email
    assert ids(await listed(api, grace, tag="vip")) == [chat]
    assert ids(await listed(api, grace, tag="other")) == []
    page = await ok(
        api.get("/v1/interactions", params={"sort": "channel", "limit": 1}, headers=grace)
    )
    rest = await ok(
        api.get(
            "/v1/interactions",
            params={"sort": "channel", "limit": 1, "cursor": page["next_cursor"]},
            headers=grace,
        )
    )
    assert ([i["id"] for i in page["items"]], [i["id"] for i in rest["items"]]) == ([chat], [mail])
    [item] = await listed(api, grace, tag="vip")
    assert (item["digital_id"], item["channel_kind"]) == ("ada", "chat")
    mailed = await detail(api, grace, mail)
    assert (mailed["digital_id"], mailed["channel_kind"]) == ("bob@example.com", "email")


async def test_an_agent_writes_first_by_email(
    api: httpx.AsyncClient, inbox: Inbox, smtp_sink: SmtpSink
) -> None:
    config = {
        "host": "127.0.0.1",
        "port": smtp_sink.port,
        "security": "none",
        "from_address": "support@corp.example",
    }
    admin = inbox.admin
    await ok(api.put("/v1/channels/mail", json={"type": "email", "config": config}, headers=admin))
    grace = inbox.agent("grace")
    body = {"contact_id": "bob", "channel": "mail", "text": "Your refund is on its way"}
    started = await ok(api.post("/v1/interactions", json=body, headers=grace), 201)
    assert (started["status"], started["assignee"], started["outbound"]) == (
        "resolved",
        "grace",
        True,
    )
    # Grace is not in `default` (mail's queue): it goes to her own.
    assert (started["queue"], started["digital_id"]) == ("support", "bob@example.com")
    await eventually(lambda: smtp_sink.messages, message="the email is sent")
    [mail] = smtp_sink.messages
    assert mail.rcpt_tos == ["bob@example.com"]
    again = await api.post("/v1/interactions", json=body, headers=grace)
    assert again.status_code == 409 and "answer there" in again.json()["detail"], again.text
    for wrong, field in (
        ({**body, "channel": HOOK}, "body.channel"),
        ({**body, "contact_id": "nobody"}, "body.contact_id"),
    ):
        assert set(problems(await api.post("/v1/interactions", json=wrong, headers=grace))) == {
            field
        }
    sms = {
        "type": "sms",
        "config": {"account_sid": "AC" + "0" * 32, "auth_token": "t", "from": "+15550001"},
    }
    await ok(api.put("/v1/channels/text", json=sms, headers=admin))
    no_phone = {"contact_id": "cy", "channel": "text", "text": "Hi"}
    assert problems(await api.post("/v1/interactions", json=no_phone, headers=grace)) == {
        "body.contact_id": "the contact has no phone number"
    }


async def test_another_tenants_inbox_is_never_visible(
    api: httpx.AsyncClient,
    inbox: Inbox,
    writes: Writes,
    make_tenant: Callable[[], Awaitable[TenantKeys]],
    webhook_receiver: WebhookReceiver,
) -> None:
    interaction = await writes(inbox.tenant, "ada", "Mine")
    other = await set_up_inbox(api, await make_tenant(), webhook_receiver)
    theirs = other.agent("grace")  # same names, same queues, another tenant
    assert await listed(api, theirs) == []
    assert await listed(api, other.admin) == []
    for call in (
        api.get(f"/v1/interactions/{interaction}", headers=theirs),
        api.post(f"/v1/interactions/{interaction}/open", headers=theirs),
        api.put(f"/v1/interactions/{interaction}/tags", json={"tags": ["x"]}, headers=theirs),
        api.get(f"/v1/interactions/{interaction}", headers=other.admin),
    ):
        assert (await call).status_code == 404
    # Their own contact of the same name has its own interactions and case numbers.
    own = await writes(other.tenant, "ada", "Theirs")
    [item] = await listed(api, theirs)
    assert (item["id"], item["case_number"]) == (own, 1)
    await act(api, theirs, own, "open")
    assert [i["id"] for i in await listed(api, inbox.agent("grace"))] == [interaction]
    metrics = await ok(api.get("/v1/metrics/service", headers=other.admin))
    assert [(m["key"], m["offered"]) for m in metrics["items"]] == [("support", 1)]


async def test_a_journeys_assign_step_routes_the_contact_to_its_queue(
    api: httpx.AsyncClient, inbox: Inbox, writes: Writes, webhook_receiver: WebhookReceiver
) -> None:
    assign = {"id": "to-sales", "type": "assign", "assignee": "sales", "kind": "queue"}
    sales = await create(api, inbox.tenant, journey("Sales", steps=[assign]))
    await ok(enroll(api, inbox.tenant, sales["id"], "bob"), 201)
    await received(webhook_receiver, 1)  # the step's notice, on the channel `inbox`
    routed = await writes(inbox.tenant, "bob", "I want to buy")
    assert (await detail(api, inbox.admin, routed))["queue"] == "sales"
    # An interaction already waiting moves with the contact's next message.
    waiting = await writes(inbox.tenant, "ada", "Hello")
    assert (await detail(api, inbox.admin, waiting))["queue"] == "support"
    await ok(enroll(api, inbox.tenant, sales["id"], "ada"), 201)
    await received(webhook_receiver, 2)
    await writes(inbox.tenant, "ada", "Prices?")
    moved = await detail(api, inbox.admin, waiting)
    assert moved["queue"] == "sales"
    assert [e["kind"] for e in moved["history"]] == ["queued", "routed", "queued"]
    # A step that names an agent: the new interaction is theirs (still `new`: nobody answered).
    to_alan = {"id": "to-alan", "type": "assign", "assignee": "alan", "kind": "agent"}
    personal = await create(api, inbox.tenant, journey("Personal", steps=[to_alan]))
    await ok(enroll(api, inbox.tenant, personal["id"], "cy"), 201)
    await received(webhook_receiver, 3)
    theirs = await detail(api, inbox.admin, await writes(inbox.tenant, "cy", "Alan?"))
    assert (theirs["queue"], theirs["assignee"], theirs["status"]) == ("support", "alan", "new")


async def test_a_message_event_opens_an_interaction(api: httpx.AsyncClient, inbox: Inbox) -> None:
    event = {
        "contact_id": "ada",
        "direction": "incoming",
        "channel": HOOK,
        "text": "Hello from the chat",
        "message_id": "m-1",
    }
    await ok(
        api.post("/v1/events/messages", json=event, headers=inbox.tenant.headers("service")), 202
    )
    [item] = await listed(api, inbox.agent("grace"))
    assert (item["status"], item["preview"], item["queue"]) == (
        "new",
        "Hello from the chat",
        "support",
    )
    # The message that opened it, posted without `at`, is its conversation's first.
    opened = await detail(api, inbox.agent("grace"), item["id"])
    assert [m["text"] for m in opened["conversation"]] == ["Hello from the chat"]


def test_an_answer_is_sent_as_written() -> None:
    for text in ("{{ contact.name }}", "{% if %}", "{# x #}", "{{{", "a{b}c", "}}{{", "{"):
        assert render(literal_template(text), {}) == text


# The contact's journeys ----------------------------------------------------------------------


class TestJourneys:
    @pytest.fixture
    def time_env(self, own_time_env: WorkflowEnvironment) -> WorkflowEnvironment:
        """The journeys wait an hour: a leftover one must not hold the shared server's clock."""
        return own_time_env

    async def test_opening_is_a_manual_assignment_and_an_answer_an_outgoing_message(
        self,
        api: httpx.AsyncClient,
        inbox: Inbox,
        writes: Writes,
        webhook_receiver: WebhookReceiver,
    ) -> None:
        def waiting(name: str, exit_condition: str) -> dict[str, Any]:
            steps = [
                send("hello", f"{name} says hello"),
                {"id": "pause", "type": "wait", "minutes": 60},
            ]
            return journey(name, steps=steps, exit_conditions=[exit_condition])

        tenant = inbox.tenant
        assigned = await create(api, tenant, waiting("Assigned", "manual_assignment"))
        answered = await create(api, tenant, waiting("Answered", "outgoing_message"))
        for each in (assigned, answered):
            await ok(enroll(api, tenant, each["id"]), 201)
            await at_step(api, tenant, each["id"], "pause")
        await received(webhook_receiver, 2)
        interaction = await writes(tenant, "ada", "Can a person help me?")

        grace = inbox.agent("grace")
        await act(api, grace, interaction, "open")
        done = await ended(api, tenant, assigned["id"])
        assert (done["state"], done["end_reason"]) == ("exited", "manual assignment to grace")
        [still] = await in_progress(api, tenant)
        assert still["journey_id"] == answered["id"]

        await act(api, grace, interaction, "reply", {"text": "Grace here, how can I help?"})
        done = await ended(api, tenant, answered["id"])
        assert (done["state"], done["end_reason"]) == ("exited", "outgoing message")
        texts = [r.json["message"]["text"] for r in await received(webhook_receiver, 3)]
        assert texts[-1] == "Grace here, how can I help?"


# Service metrics -----------------------------------------------------------------------------


async def test_service_metrics_by_queue_agent_and_day(
    api: httpx.AsyncClient, inbox: Inbox, writes: Writes
) -> None:
    grace, alan = inbox.agent("grace"), inbox.agent("alan")
    now = datetime.now(UTC)
    # Answered after ten minutes in the queue, then ended: attended.
    first = await writes(inbox.tenant, "ada", "One", at=now - timedelta(minutes=10))
    await act(api, grace, first, "open")
    await act(api, grace, first, "reply", {"text": "Done"})
    await act(api, grace, first, "end")
    # Ended by an agent before anyone took it: lost.
    second = await writes(inbox.tenant, "bob", "Two", at=now - timedelta(minutes=5))
    await act(api, grace, second, "end")
    # Taken after two minutes, transferred to sales (alan's alone: attended there by grace),
    # ended by alan without a word: abandoned in sales.
    third = await writes(inbox.tenant, "cy", "Three", at=now - timedelta(minutes=2))
    await act(api, grace, third, "open")
    await act(api, grace, third, "transfer", {"queue": "sales"})
    await act(api, alan, third, "end")

    async def metrics(group_by: str) -> dict[str | None, dict[str, Any]]:
        period = {
            "from": (now - timedelta(hours=1)).isoformat(),
            "to": (now + timedelta(minutes=5)).isoformat(),
            "group_by": group_by,
        }
        answer = await ok(api.get("/v1/metrics/service", params=period, headers=inbox.admin))
        return {row.pop("key"): row for row in answer["items"]}

    near = {"abs": 30}
    queues = await metrics("queue")
    assert list(queues) == ["sales", "support"]
    support, sales = queues["support"], queues["sales"]
    assert {k: support[k] for k in ("offered", "closed", "attended", "abandoned", "lost")} == {
        "offered": 3,
        "closed": 2,
        "attended": 2,
        "abandoned": 0,
        "lost": 1,
    }
    assert support["transferred"] == 1
    assert support["average_queue_seconds"] == pytest.approx(360, **near)
    assert support["average_first_response_seconds"] == pytest.approx(600, **near)
    assert support["average_response_seconds"] == pytest.approx(600, **near)
    assert support["average_handling_seconds"] == pytest.approx(0, **near)
    assert (sales["offered"], sales["closed"], sales["abandoned"], sales["attended"]) == (
        1,
        1,
        1,
        0,
    )
    assert sales["average_queue_seconds"] == pytest.approx(0, **near)
    assert sales["average_first_response_seconds"] is None

    agents = await metrics("agent")
    assert list(agents) == ["alan", "grace", None]
    assert (agents["grace"]["offered"], agents["grace"]["attended"], agents["grace"]["closed"]) == (
        2,
        2,
        1,
    )
    assert (agents["alan"]["offered"], agents["alan"]["abandoned"]) == (1, 1)
    assert (agents[None]["lost"], agents[None]["closed"], agents[None]["offered"]) == (1, 1, 0)

    days = await metrics("day")
    assert sum(row["offered"] for row in days.values()) == 4
    assert sum(row["closed"] for row in days.values()) == 3
    assert all(len(str(day)) == 10 for day in days)  # YYYY-MM-DD
    wrong = await api.get(
        "/v1/metrics/service",
        params={"from": now.isoformat(), "to": (now - timedelta(days=1)).isoformat()},
        headers=inbox.admin,
    )
    assert problems(wrong) == {"query.from": "must be before `to`"}
    assert (await api.get("/v1/metrics/service", headers=grace)).status_code == 403
