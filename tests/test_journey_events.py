"""Message and assignment events and journeys, through the HTTP API: messages start journeys,
answer their questions and end them (exit conditions); the chat menu walked through."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from nudge.models.journey_templates import TEMPLATES_DIR
from tests.conftest import TenantKeys, problems
from tests.utils.histories import (
    activity_runs,
    scheduled,
    signals_handled,
    signals_received,
    waiting_on_a_timer,
)
from tests.utils.journeys import (
    ask,
    at_step,
    create,
    ended,
    enroll,
    in_progress,
    journey,
    message,
    run_of,
    send,
    sent_texts,
    setup_contact,
)
from tests.utils.receivers import WebhookReceiver
from tests.utils.waiting import eventually, received

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture
def time_env(own_time_env: WorkflowEnvironment) -> WorkflowEnvironment:
    """Enrollments wait for replies: a leftover one must not hold the shared server's clock."""
    return own_time_env


def by_message(name: str, *keywords: str, **settings: Any) -> dict[str, Any]:
    """A journey that a matching incoming message starts: it greets, then asks."""
    return journey(
        name,
        trigger={"type": "incoming_message", "keywords": list(keywords)},
        steps=[send("greet", f"{name} here"), ask("question", f"{name}: anything else?")],
        **settings,
    )


def nurture(*exit_conditions: str) -> dict[str, Any]:
    """An `api` journey that sends, waits an hour, and sends again."""
    return journey(
        "Nurture",
        steps=[
            send("hello", "Hello"),
            {"id": "pause", "type": "wait", "minutes": 60},
            send("later", "Still there?"),
        ],
        exit_conditions=list(exit_conditions),
    )


# Messages start journeys ---------------------------------------------------------------------


async def test_an_incoming_message_starts_the_journeys_whose_keywords_it_has(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await setup_contact(api, tenant, webhook_receiver)
    support = await create(api, tenant, by_message("Support", "help", "broken"))
    offers = await create(api, tenant, by_message("Offers", "offer"))
    await create(api, tenant, by_message("Draft", "help"), publish=False)

    accepted = await message(api, tenant, "I need HELP, please", "m-1")
    assert (accepted["status"], accepted["journeys_started"]) == ("accepted", [support["id"]])
    assert await sent_texts(webhook_receiver, 2) == ["Support here", "Support: anything else?"]
    await at_step(api, tenant, support["id"], "question")
    assert [e["journey_id"] for e in await in_progress(api, tenant)] == [support["id"]]

    # Whole words only: "offerings" is not "offer".
    unmatched = await message(api, tenant, "any offerings?", "m-2")
    assert (unmatched["journeys_started"], unmatched["journeys_notified"]) == ([], [support["id"]])
    # It answered Support's question instead; only Support ever had an enrollment.
    support_run = run_of(time_env, tenant, support["id"])
    assert await support_run.result() == "completed"
    assert await scheduled(support_run, "send_journey_message") == ["completed"] * 2
    everything = await in_progress(api, tenant, include_ended=True)
    assert offers["id"] not in [e["journey_id"] for e in everything]
    assert [e["journey_id"] for e in everything] == [support["id"]]
    assert len(webhook_receiver.requests) == 2


async def test_a_repeated_message_id_does_nothing_more(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await setup_contact(api, tenant, webhook_receiver)
    anything = await create(api, tenant, by_message("Anything"))  # no keywords: any message
    first = await message(api, tenant, "hello", "m-1")
    assert first["journeys_started"] == [anything["id"]]
    await at_step(api, tenant, anything["id"], "question")
    run = run_of(time_env, tenant, anything["id"])
    await eventually(lambda: waiting_on_a_timer(run), message="the run waits for an answer")
    signals = await signals_received(run)

    repeated = await message(api, tenant, "hello", "m-1")
    assert repeated == {
        "status": "duplicate",
        "message_id": "m-1",
        "journeys_started": [],
        "journeys_notified": [],
    }
    # Had it been delivered, it would have answered the question and ended the journey.
    assert await signals_received(run) == signals
    assert await waiting_on_a_timer(run)
    assert len(webhook_receiver.requests) == 2
    [still] = await in_progress(api, tenant)
    assert (still["state"], still["current_step"]) == ("active", "question")
    history = await api.get("/v1/contacts/ada/messages", headers=tenant.headers())
    assert [m["text"] for m in history.json()["items"] if m["direction"] == "incoming"] == ["hello"]


async def test_a_message_answers_the_question_it_started_and_does_not_restart_it(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await setup_contact(api, tenant, webhook_receiver)
    chat = await create(
        api, tenant, by_message("Chat", exit_conditions=["incoming_message"])
    )  # the exit condition must not take the message that started it, nor the answer
    first = await message(api, tenant, "hi", "m-1")
    assert (first["journeys_started"], first["journeys_notified"]) == ([chat["id"]], [])
    await at_step(api, tenant, chat["id"], "question")

    answered = await message(api, tenant, "no thanks", "m-2")
    assert (answered["journeys_notified"], answered["journeys_started"]) == ([chat["id"]], [])
    done = await ended(api, tenant, chat["id"])
    assert done["state"] == "completed"
    run = run_of(time_env, tenant, chat["id"])
    assert await run.result() == "completed"
    assert await scheduled(run, "send_journey_message") == ["completed"] * 2
    assert [e["id"] for e in await in_progress(api, tenant, include_ended=True)] == [done["id"]]
    assert len(webhook_receiver.requests) == 2


async def test_many_published_journeys_are_started_at_once(
    api: httpx.AsyncClient, tenant: TenantKeys, webhook_receiver: WebhookReceiver
) -> None:
    await setup_contact(api, tenant, webhook_receiver)
    for i in range(24):
        await create(api, tenant, by_message(f"Other {i}", f"other{i}"))
    wanted = {(await create(api, tenant, by_message(f"Go {i}", "go")))["id"] for i in range(6)}

    started = asyncio.get_running_loop().time()
    accepted = await message(api, tenant, "go", "m-1")
    elapsed = asyncio.get_running_loop().time() - started
    assert set(accepted["journeys_started"]) == wanted
    assert elapsed < 5, f"the event took {elapsed:.1f} s"
    await sent_texts(webhook_receiver, 12)
    assert {e["journey_id"] for e in await in_progress(api, tenant)} == wanted


async def test_contacts_ejected_by_a_stop_are_not_started_again_by_messages(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await setup_contact(api, tenant, webhook_receiver)
    chat = await create(api, tenant, by_message("Chat", "hi"))
    await message(api, tenant, "hi", "m-1")
    await at_step(api, tenant, chat["id"], "question")
    run = run_of(time_env, tenant, chat["id"])
    await eventually(lambda: waiting_on_a_timer(run), message="the run waits for the answer")
    await api.post(f"/v1/journeys/{chat['id']}/stop", headers=tenant.headers())
    await ended(api, tenant, chat["id"])
    await api.post(f"/v1/journeys/{chat['id']}/publish", headers=tenant.headers())

    again = await message(api, tenant, "hi again", "m-2")
    assert again["journeys_started"] == []
    # The newest run for Ada is still the stopped one: no new one was started.
    assert await run.result() == "stopped"
    [only] = await in_progress(api, tenant, include_ended=True)
    assert only["state"] == "stopped"
    assert await scheduled(run, "send_journey_message") == ["completed"] * 2
    assert len(webhook_receiver.requests) == 2


async def test_an_event_for_an_unknown_contact_is_refused(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    event = {"contact_id": "nobody", "direction": "incoming", "channel": "hook", "message_id": "m"}
    answer = await api.post("/v1/events/messages", json=event, headers=tenant.headers("service"))
    assert problems(answer) == {"body.contact_id": "no contact with external id 'nobody'"}
    assignment = {"contact_id": "nobody", "assignee": "grace", "manual": True}
    answer = await api.post(
        "/v1/events/assignments", json=assignment, headers=tenant.headers("service")
    )
    assert problems(answer) == {"body.contact_id": "no contact with external id 'nobody'"}
    agent = await api.post(
        "/v1/events/assignments", json=assignment, headers=tenant.headers("agent")
    )
    assert agent.status_code == 403


# Exit conditions -----------------------------------------------------------------------------


async def test_an_incoming_message_during_a_wait_ends_the_journey(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await setup_contact(api, tenant, webhook_receiver)
    run = await create(api, tenant, nurture("incoming_message"))
    await enroll(api, tenant, run["id"])
    await at_step(api, tenant, run["id"], "pause")

    accepted = await message(api, tenant, "stop writing to me", "m-1")
    assert accepted["journeys_notified"] == [run["id"]]
    done = await ended(api, tenant, run["id"])
    assert (done["state"], done["ended_by"], done["end_reason"]) == (
        "exited",
        "exit condition",
        "incoming message",
    )
    # Waiting for the result skips time: a run still in its wait would go on to "later".
    handle = run_of(time_env, tenant, run["id"])
    assert await handle.result() == "exited"
    assert await scheduled(handle, "send_journey_message") == ["completed"]
    assert len(webhook_receiver.requests) == 1


async def test_without_the_exit_condition_a_message_changes_nothing(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await setup_contact(api, tenant, webhook_receiver)
    run = await create(api, tenant, nurture("outgoing_message"))
    await enroll(api, tenant, run["id"])
    await at_step(api, tenant, run["id"], "pause")
    handle = run_of(time_env, tenant, run["id"])
    await eventually(lambda: waiting_on_a_timer(handle), message="the run waits")
    before = [a.name for a in await activity_runs(handle)]
    await message(api, tenant, "thanks", "m-1")
    # The run took the message in and went on waiting: nothing scheduled, nothing ended.
    await eventually(lambda: signals_handled(handle), message="the run takes the message in")
    assert [a.name for a in await activity_runs(handle)] == before
    assert await waiting_on_a_timer(handle)
    [still] = await in_progress(api, tenant)
    assert (still["state"], still["current_step"]) == ("active", "pause")

    await time_env.sleep(timedelta(minutes=61))
    assert await sent_texts(webhook_receiver, 2) == ["Hello", "Still there?"]
    assert (await ended(api, tenant, run["id"]))["state"] == "completed"


async def test_an_agents_message_ends_it_but_nudges_own_message_echoed_back_does_not(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await setup_contact(api, tenant, webhook_receiver)
    run = await create(api, tenant, nurture("outgoing_message"))
    await enroll(api, tenant, run["id"])
    await at_step(api, tenant, run["id"], "pause")
    [hello] = await received(webhook_receiver, 1)

    echo = await message(api, tenant, "Hello", hello.json["idempotency_key"], direction="outgoing")
    assert (echo["status"], echo["journeys_notified"]) == ("duplicate", [])
    handle = run_of(time_env, tenant, run["id"])
    assert await signals_received(handle) == 0  # the echo never reached the run
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    assert [e["state"] for e in await in_progress(api, tenant)] == ["active"]

    agent = await message(api, tenant, "Hi, Grace here", "agent-1", direction="outgoing")
    assert agent["journeys_notified"] == [run["id"]]
    done = await ended(api, tenant, run["id"])
    assert (done["state"], done["end_reason"]) == ("exited", "outgoing message")
    history = await api.get("/v1/contacts/ada/messages", headers=tenant.headers())
    assert [m["text"] for m in history.json()["items"]] == ["Hi, Grace here", "Hello"]


async def test_a_manual_assignment_ends_the_journey_an_automatic_one_does_not(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await setup_contact(api, tenant, webhook_receiver)
    run = await create(api, tenant, nurture("manual_assignment"))
    await enroll(api, tenant, run["id"])
    await at_step(api, tenant, run["id"], "pause")
    handle = run_of(time_env, tenant, run["id"])
    await eventually(lambda: waiting_on_a_timer(handle), message="the run waits")
    before = [a.name for a in await activity_runs(handle)]
    service = tenant.headers("service")

    automatic = await api.post(
        "/v1/events/assignments",
        json={"contact_id": "ada", "assignee": "sales", "manual": False},
        headers=service,
    )
    assert automatic.status_code == 202, automatic.text
    assert automatic.json()["journeys_notified"] == [run["id"]]
    # The run took the assignment in and went on waiting: nothing scheduled, nothing ended.
    await eventually(lambda: signals_handled(handle), message="the run takes it in")
    assert [a.name for a in await activity_runs(handle)] == before
    assert await waiting_on_a_timer(handle)
    assert [e["state"] for e in await in_progress(api, tenant)] == ["active"]

    manual = await api.post(
        "/v1/events/assignments",
        json={"contact_id": "ada", "assignee": "grace", "manual": True},
        headers=service,
    )
    assert manual.status_code == 202
    done = await ended(api, tenant, run["id"])
    assert (done["state"], done["ended_by"], done["end_reason"]) == (
        "exited",
        "exit condition",
        "manual assignment to grace",
    )
    assert await handle.result() == "exited"
    assert await scheduled(handle, "send_journey_message") == ["completed"]
    assert len(webhook_receiver.requests) == 1


# The chat menu -------------------------------------------------------------------------------


async def test_walking_the_chat_menu_into_product_and_back(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await setup_contact(api, tenant, webhook_receiver)
    template = json.loads((TEMPLATES_DIR / "chat-menu.json").read_text())
    imported = await api.post("/v1/journeys/import", json=template, headers=tenant.headers())
    assert imported.status_code == 201, imported.text
    ids = {j["name"].removeprefix("Chat menu: "): j["id"] for j in imported.json()}
    menu = (
        "How can we help? Reply with a number:\n1 Product\n2 Service\n3 About us\n4 Talk to sales"
    )

    started = await message(api, tenant, "Hello there", "m-1")
    assert started["journeys_started"] == [ids["main menu"]]
    assert await sent_texts(webhook_receiver, 2) == ["Hi Ada! Welcome to Nudge.", menu]
    await at_step(api, tenant, ids["main menu"], "menu")

    await message(api, tenant, "1", "m-2")
    product = await at_step(api, tenant, ids["product"], "menu")
    assert product["journey_name"] == "Chat menu: product"
    assert (await sent_texts(webhook_receiver, 3))[2].startswith("Product. Reply with a number:")
    [main_before] = [
        e
        for e in await in_progress(api, tenant, include_ended=True)
        if e["journey_id"] == ids["main menu"]
    ]
    assert (main_before["state"], main_before["end_reason"]) == (
        "handed_over",
        "handed over to 'Chat menu: product'",
    )

    await message(api, tenant, "1", "m-3")  # "What Nudge does", then the product menu again
    texts = await sent_texts(webhook_receiver, 5)
    assert texts[3].startswith("Nudge follows up for your teams")
    assert texts[4].startswith("Product. Reply with a number:")

    await message(api, tenant, "0", "m-4")  # back to the main menu, at its menu step
    await at_step(api, tenant, ids["main menu"], "menu")
    assert (await sent_texts(webhook_receiver, 6))[5] == menu
    assert [e["journey_name"] for e in await in_progress(api, tenant)] == ["Chat menu: main menu"]

    await message(api, tenant, "4", "m-5")  # talk to sales: the inbox is told to assign
    done = await ended(api, tenant, ids["talk to sales"])
    assert done["state"] == "completed"
    sent = await received(webhook_receiver, 8)
    assert sent[6].json["message"]["text"].startswith("Thanks! Someone from our sales team")
    assert sent[7].json["channel"] == "inbox"
    assert sent[7].json["message"]["text"] == "Assign Ada to the queue sales"
    assert sent[7].json["source"]["assignment"] == {"assignee": "sales", "kind": "queue"}
    # The last journey of the walk has closed, and nothing is active: that was all.
    assert await run_of(time_env, tenant, ids["talk to sales"]).result() == "completed"
    assert await in_progress(api, tenant) == []
    assert len(webhook_receiver.requests) == 8


# Batches -------------------------------------------------------------------------------------


def event(contact: str, message_id: str, words: str = "all sorted") -> dict[str, str]:
    return {
        "contact_id": contact,
        "direction": "incoming",
        "channel": "hook",
        "text": words,
        "message_id": message_id,
    }


async def post_batch(
    api: httpx.AsyncClient, tenant: TenantKeys, *events: dict[str, str]
) -> httpx.Response:
    return await api.post(
        "/v1/events/messages/batch",
        json={"events": list(events)},
        headers=tenant.headers("service"),
    )


async def two_waiting(
    api: httpx.AsyncClient, tenant: TenantKeys, hook: WebhookReceiver
) -> dict[str, Any]:
    """Ada and Bob, each at the nurture journey's wait (it ends on an incoming message)."""
    await setup_contact(api, tenant, hook)
    await setup_contact(api, tenant, hook, external_id="bob")
    run = await create(api, tenant, nurture("incoming_message"))
    for contact in ("ada", "bob"):
        assert (await enroll(api, tenant, run["id"], contact)).status_code == 201
    await received(hook, 2)
    await eventually(lambda: _all_at(api, tenant, run["id"], "pause"), message="both runs wait")
    return run


async def _all_at(api: httpx.AsyncClient, tenant: TenantKeys, journey_id: str, step: str) -> bool:
    answer = await api.get(f"/v1/journeys/{journey_id}/enrollments", headers=tenant.headers())
    items = answer.json()["items"]
    return len(items) == 2 and all(e["current_step"] == step for e in items)


async def test_a_batch_is_handled_message_by_message_and_answered_in_order(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    run = await two_waiting(api, tenant, webhook_receiver)
    answer = await post_batch(
        api, tenant, event("ada", "m-1"), event("bob", "m-2"), event("ada", "m-1")
    )
    assert answer.status_code == 202, answer.text
    results = answer.json()["results"]
    assert [(r["message_id"], r["status"]) for r in results] == [
        ("m-1", "accepted"),
        ("m-2", "accepted"),
        ("m-1", "duplicate"),  # the same id twice in one batch is one message
    ]
    assert [r["journeys_notified"] for r in results] == [[run["id"]], [run["id"]], []]
    for contact in ("ada", "bob"):
        handle = run_of(time_env, tenant, run["id"], contact)
        assert await handle.result() == "exited"
        assert await signals_received(handle) == 1
    history = await api.get("/v1/contacts/ada/messages", headers=tenant.headers())
    assert [m["text"] for m in history.json()["items"]] == ["all sorted", "Hello"]

    again = await post_batch(api, tenant, event("ada", "m-1"), event("bob", "m-2"))
    assert [r["status"] for r in again.json()["results"]] == ["duplicate", "duplicate"]


async def test_a_batch_naming_an_unknown_contact_stores_none_of_it(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    run = await two_waiting(api, tenant, webhook_receiver)
    answer = await post_batch(
        api, tenant, event("ada", "m-1"), event("nobody", "m-2"), event("bob", "m-3")
    )
    assert problems(answer) == {"body.events.1.contact_id": "no contact with external id 'nobody'"}
    history = await api.get("/v1/contacts/ada/messages", headers=tenant.headers())
    assert [m["text"] for m in history.json()["items"]] == ["Hello"]
    assert await _all_at(api, tenant, run["id"], "pause")
    # m-1 was not kept: posted again, it is new.
    again = await post_batch(api, tenant, event("ada", "m-1"))
    assert again.json()["results"][0]["status"] == "accepted"


@pytest.mark.parametrize(
    ("events", "where"), [(0, "body.events"), (501, "body.events"), (1, "body.events.0.channel")]
)
async def test_a_batch_out_of_shape_is_refused_naming_the_field(
    api: httpx.AsyncClient, tenant: TenantKeys, events: int, where: str
) -> None:
    body = [event("ada", f"m-{i}") for i in range(events)]
    if events == 1:
        body[0]["channel"] = "not a channel!"
    answer = await post_batch(api, tenant, *body)
    assert answer.status_code == 422
    assert where in problems(answer)
