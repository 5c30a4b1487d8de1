"""Journeys on the time-skipping server: real database, real activities, a real webhook receiver.

Each test has a Temporal server of its own (`own_time_env`): several runs stay open
(children, waits) and would stop a shared server from skipping time.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from nudge.errors import Conflict
from nudge.models.channels import WebhookChannelPut, WebhookConfig
from nudge.models.db import transaction
from nudge.models.directory import ContactPut
from nudge.models.journeys import JourneyDefinition
from nudge.models.payloads import Ending, JourneyAssignment, JourneyMessage, StepInput
from nudge.models.signals import (
    JOURNEY_ASSIGNMENT,
    JOURNEY_MESSAGE,
    STOP_ENROLLMENT,
    Signal,
)
from nudge.models.tables import Contact, Delivery, Enrollment, utcnow
from nudge.naming import CONTACT, JOURNEY, KIND, TENANT, journey_workflow_id
from nudge.runs.journeys import enroll, signal_enrollment, stop_journey
from nudge.security import SecretBox
from nudge.settings import Settings
from nudge.store.directory import find_contact, put_channel, put_contact
from nudge.store.journeys import (
    create_enrollment,
    create_journey,
    get_journey,
    save_journey_version,
    set_journey_status,
)
from tests.conftest import TenantKeys
from tests.utils.egress import loopback_http
from tests.utils.histories import (
    activity_runs,
    keep_history,
    scheduled,
    signals_handled,
    waiting_on_a_timer,
)
from tests.utils.receivers import Reply, WebhookReceiver
from tests.utils.waiting import eventually, received

pytestmark = pytest.mark.usefixtures("worker")

THREE_DAYS = 3 * 24 * 60


@pytest.fixture
def time_env(own_time_env: WorkflowEnvironment) -> WorkflowEnvironment:
    return own_time_env


def send(step_id: str, text: str, **more: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "send_message",
        "channel": "chat",
        "message": {"kind": "text", "text": text},
        **more,
    }


def ask(step_id: str, text: str, variable: str, on_timeout: str, **more: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "ask",
        "channel": "last_used",
        "message": {"kind": "text", "text": text},
        "variable": variable,
        "timeout_minutes": 60,
        "on_timeout": on_timeout,
        **more,
    }


def journey(name: str, steps: list[dict[str, Any]], **settings: Any) -> dict[str, Any]:
    return {
        "name": name,
        "trigger": {"type": "api"},
        "settings": {"allow_agents_stop": True, **settings},
        "steps": steps,
    }


class Scene:
    """One tenant with a chat channel that posts to the receiver, and what tests do with it."""

    def __init__(
        self,
        env: WorkflowEnvironment,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        tenant: TenantKeys,
        hook: WebhookReceiver,
    ) -> None:
        self.env, self.sessions, self.settings = env, sessions, settings
        self.tenant, self.hook = tenant, hook

    async def contact(self, external_id: str, **attributes: Any) -> None:
        async with transaction(self.sessions) as session:
            contact = await put_contact(
                session,
                self.tenant.id,
                external_id,
                ContactPut(name=external_id.title(), attributes=attributes),
            )
            contact.last_channel = "chat"

    async def channel(self, slug: str, url: str, box: SecretBox) -> None:
        config = WebhookChannelPut(
            type="webhook", config=WebhookConfig.model_validate({"url": url})
        )
        async with transaction(self.sessions) as session:
            await put_channel(session, self.tenant.id, slug, config, box)

    async def journey(self, body: dict[str, Any], publish: bool = True) -> str:
        async with transaction(self.sessions) as session:
            created = await create_journey(
                session, self.tenant.id, JourneyDefinition.model_validate(body)
            )
            if publish:
                await set_journey_status(session, created, "published")
            return created.id

    async def replace(self, journey_id: str, body: dict[str, Any]) -> None:
        async with transaction(self.sessions) as session:
            found = await get_journey(session, self.tenant.id, journey_id)
            await save_journey_version(session, found, JourneyDefinition.model_validate(body))

    async def publish(self, journey_id: str, status: str = "published") -> None:
        async with transaction(self.sessions) as session:
            await set_journey_status(
                session, await get_journey(session, self.tenant.id, journey_id), status
            )

    async def enroll(
        self, journey_id: str, contact: str = "ada", **more: Any
    ) -> WorkflowHandle[Any, Any]:
        await enroll(
            self.env.client,
            self.sessions,
            self.settings,
            tenant_id=self.tenant.id,
            tenant_slug=self.tenant.slug,
            journey_id=journey_id,
            external_id=contact,
            variables=more.pop("variables", {}),
            **more,
        )
        return self.handle(journey_id, contact)

    def handle(self, journey_id: str, contact: str = "ada") -> WorkflowHandle[Any, Any]:
        workflow_id = journey_workflow_id(self.tenant.slug, journey_id, contact)
        return self.env.client.get_workflow_handle(workflow_id)

    async def signal(
        self, journey_id: str, signal: Signal[Any], arg: Any, contact: str = "ada"
    ) -> bool:
        return await signal_enrollment(
            self.env.client, self.tenant.slug, journey_id, contact, signal, arg
        )

    async def incoming(self, journey_id: str, text: str, contact: str = "ada") -> None:
        event = JourneyMessage(direction="incoming", channel="chat", text=text, message_id=text)
        assert await self.signal(journey_id, JOURNEY_MESSAGE, event, contact)

    async def enrollments(self, journey_id: str, contact: str = "ada") -> list[Enrollment]:
        """The contact's enrollments in the journey, oldest first."""
        async with self.sessions() as session:
            rows = await session.execute(
                select(Enrollment)
                .join(Contact, Contact.id == Enrollment.contact_id)
                .where(
                    Enrollment.journey_id == journey_id,
                    Contact.tenant_id == self.tenant.id,
                    Contact.external_id == contact,
                )
                .order_by(Enrollment.started_at)
            )
            return list(rows.scalars())

    async def newest(self, journey_id: str, contact: str = "ada") -> Enrollment:
        return (await self.enrollments(journey_id, contact))[-1]

    async def texts(self, count: int) -> list[str]:
        """Every text received, once ``count`` messages have arrived."""
        await received(self.hook, count)
        return self.sent()

    def sent(self) -> list[str]:
        return [r.json["message"].get("text", "") for r in self.hook.requests]

    async def at_step(
        self, journey_id: str, step: str, contact: str = "ada", waiting: bool = True
    ) -> Enrollment:
        """The contact's active enrollment once it is at ``step`` (and waiting there)."""

        async def there() -> Enrollment | None:
            rows = [e for e in await self.enrollments(journey_id, contact) if e.state == "active"]
            found = rows[-1] if rows else None
            if found and found.current_step == step and (found.waiting_until or not waiting):
                return found
            return None

        found: Enrollment = await eventually(there, message=f"{contact} reaches step {step!r}")
        return found


async def details(handle: WorkflowHandle[Any, Any]) -> str:
    """The run's current details (what the Web UI shows), from the built-in metadata query.

    On a closed run the query makes the worker replay it; tests ask it after their last
    time skip (the test server seemed to skip time no more after such a query, at times).
    """
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return str(metadata.current_details)


async def details_are(handle: WorkflowHandle[Any, Any], expected: str) -> bool:
    return await details(handle) == expected


async def took_in(handle: WorkflowHandle[Any, Any], signals: int) -> bool:
    """True once the run's workflow code has seen ``signals`` signals."""
    return await signals_handled(handle) >= signals


@pytest.fixture
async def scene(
    time_env: WorkflowEnvironment,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    box: SecretBox,
) -> Scene:
    made = Scene(time_env, sessions, settings, tenant, webhook_receiver)
    await made.channel("chat", webhook_receiver.url, box)
    await made.contact("ada")
    return made


# Exit conditions and stops ---------------------------------------------------------------------


async def test_a_three_day_wait_ends_at_once_on_an_incoming_message(scene: Scene) -> None:
    journey_id = await scene.journey(
        journey(
            "Welcome",
            [
                send("hello", "Hello {{ contact.name }}"),
                {"id": "pause", "type": "wait", "minutes": THREE_DAYS},
                send("reminder", "Still there?"),
            ],
            exit_conditions=["incoming_message"],
        )
    )
    handle = await scene.enroll(journey_id)
    assert await scene.texts(1) == ["Hello Ada"]
    waiting = await scene.at_step(journey_id, "pause")
    assert waiting.waiting_until is not None
    assert timedelta(days=3) - (waiting.waiting_until - utcnow()) < timedelta(minutes=5)
    description = await handle.describe()
    assert await description.static_summary() == "Journey Welcome · contact ada"
    expected = f"At step pause, waiting until {waiting.waiting_until:%Y-%m-%d %H:%M} UTC"
    await eventually(lambda: details_are(handle, expected), message=f"the details say {expected}")
    attributes = description.typed_search_attributes
    assert (
        attributes.get(TENANT),
        attributes.get(KIND),
        attributes.get(JOURNEY),
        attributes.get(CONTACT),
    ) == (scene.tenant.slug, "journey", journey_id, "ada")

    await scene.incoming(journey_id, "call me instead")
    assert await handle.result() == "exited"
    ended = await scene.newest(journey_id)
    assert (ended.state, ended.ended_by, ended.end_reason) == (
        "exited",
        "exit condition",
        "incoming message",
    )
    assert ended.waiting_until is None and ended.ended_at is not None
    # The run has closed: its history is all it did, and the reminder was never scheduled.
    assert await scheduled(handle, "send_journey_message") == ["completed"]
    assert scene.sent() == ["Hello Ada"]
    assert await details(handle) == "Ended: exit condition incoming message"
    await keep_history(handle, "journey-exit-condition")


async def test_a_message_signalled_right_after_enrolling_is_not_lost(scene: Scene) -> None:
    journey_id = await scene.journey(
        journey(
            "Welcome",
            [{"id": "pause", "type": "wait", "minutes": THREE_DAYS}, send("later", "Hi")],
            exit_conditions=["incoming_message"],
        )
    )
    handle = await scene.enroll(journey_id)
    await scene.incoming(journey_id, "hi")  # before the run's first task, most likely
    assert await handle.result() == "exited"
    assert (await scene.newest(journey_id)).end_reason == "incoming message"
    assert scene.sent() == []


async def test_outgoing_messages_and_manual_assignments_are_exit_conditions(
    scene: Scene,
) -> None:
    await scene.contact("bob")
    journey_id = await scene.journey(
        journey(
            "Nurture",
            [{"id": "pause", "type": "wait", "minutes": 60}, send("nudge", "Any news?")],
            exit_conditions=["outgoing_message", "manual_assignment"],
        )
    )
    ada, bob = await scene.enroll(journey_id), await scene.enroll(journey_id, "bob")
    await scene.at_step(journey_id, "pause", "bob")
    await eventually(lambda: waiting_on_a_timer(bob), message="bob's run waits")
    before = [a.name for a in await activity_runs(bob)]
    await scene.signal(
        journey_id,
        JOURNEY_MESSAGE,
        JourneyMessage(direction="outgoing", channel="chat", text="Hi, Ana here", message_id="o1"),
    )
    assert await ada.result() == "exited"
    assert (await scene.newest(journey_id)).end_reason == "outgoing message"

    # Neither an automatic assignment nor an incoming message is one of its exit conditions.
    await scene.signal(journey_id, JOURNEY_ASSIGNMENT, JourneyAssignment(assignee="bot"), "bob")
    await scene.incoming(journey_id, "hello?", "bob")
    # Bob's run took both in and went on waiting: nothing scheduled, nothing ended.
    await eventually(lambda: took_in(bob, 2), message="bob's run takes both events in")
    assert [a.name for a in await activity_runs(bob)] == before
    assert await waiting_on_a_timer(bob)
    assert (await bob.describe()).status == WorkflowExecutionStatus.RUNNING
    assert (await scene.newest(journey_id, "bob")).state == "active"
    await scene.signal(
        journey_id, JOURNEY_ASSIGNMENT, JourneyAssignment(assignee="ana", manual=True), "bob"
    )
    assert await bob.result() == "exited"
    assert (await scene.newest(journey_id, "bob")).end_reason == "manual assignment to ana"
    assert scene.sent() == []


async def test_an_agent_stop_ends_the_run_and_says_who(scene: Scene) -> None:
    journey_id = await scene.journey(
        journey(
            "Survey",
            [ask("rate", "Rate us 1-5", "rating", on_timeout="bye"), send("bye", "Bye")],
        )
    )
    handle = await scene.enroll(journey_id)
    await scene.texts(1)
    await scene.at_step(journey_id, "rate")
    await eventually(lambda: waiting_on_a_timer(handle), message="the run waits for the rating")
    assert await scene.signal(
        journey_id, STOP_ENROLLMENT, Ending(by="agent ana", reason="taking over")
    )
    assert await handle.result() == "stopped"
    stopped = await scene.newest(journey_id)
    assert (stopped.state, stopped.ended_by, stopped.end_reason) == (
        "stopped",
        "agent ana",
        "taking over",
    )
    # Closed while it waited for the answer: the question was its only send.
    assert await scheduled(handle, "send_journey_message") == ["completed"]
    assert scene.sent() == ["Rate us 1-5"]
    assert not await scene.signal(
        journey_id, STOP_ENROLLMENT, Ending(by="agent ana", reason="again")
    )
    assert await details(handle) == "Stopped by agent ana: taking over"


async def test_stopping_a_journey_ejects_everyone_for_good(scene: Scene) -> None:
    for contact in ("bob", "cy", "dee"):
        await scene.contact(contact)
    journey_id = await scene.journey(
        journey(
            "Onboarding",
            [
                send("hello", "Hello {{ contact.name }}"),
                {"id": "pause", "type": "wait", "minutes": 10},
                ask("plan", "Which plan?", "plan", on_timeout="bye"),
                send("bye", "Bye"),
            ],
        )
    )
    asking = await scene.enroll(journey_id, "ada")
    await scene.at_step(journey_id, "pause", "ada")
    await scene.env.sleep(timedelta(minutes=11))
    await scene.at_step(journey_id, "plan", "ada")
    waiting = await scene.enroll(journey_id, "bob")
    await scene.at_step(journey_id, "pause", "bob")
    sent_before = len(await scene.texts(3))  # ada: hello, plan; bob: hello
    for run in (asking, waiting):  # their sends done, waiting for an answer or the time
        await eventually(lambda run=run: waiting_on_a_timer(run), message=f"{run.id} waits")
    fresh = await scene.enroll(journey_id, "cy")

    stop = Ending(by="admin API key", reason="journey stopped")
    await stop_journey(
        scene.env.client,
        scene.sessions,
        scene.settings,
        tenant_id=scene.tenant.id,
        tenant_slug=scene.tenant.slug,
        journey_id=journey_id,
        stop=stop,
    )
    for contact in ("ada", "bob", "cy"):
        row = await scene.newest(journey_id, contact)
        assert (row.state, row.ejected, row.ended_by) == ("stopped", True, "admin API key")
    assert [await h.result() for h in (asking, waiting, fresh)] == ["stopped"] * 3

    # All three have closed: ada's and bob's runs scheduled no send after the stop, and
    # cy's at most its hello (which checks the stored enrollment before it leaves).
    assert await scheduled(asking, "send_journey_message") == ["completed"] * 2
    assert await scheduled(waiting, "send_journey_message") == ["completed"]
    assert len(await scheduled(fresh, "send_journey_message")) <= 1
    assert len(scene.sent()) <= sent_before + 1  # at most cy's hello, if it left first
    assert "Which plan?" not in scene.sent()[sent_before:]
    await scene.publish(journey_id)
    with pytest.raises(Conflict, match="ejected"):
        await scene.enroll(journey_id, "ada")
    assert len(await scene.enrollments(journey_id, "ada")) == 1
    newcomer = await scene.enroll(journey_id, "dee")
    await scene.at_step(journey_id, "pause", "dee")
    assert (await newcomer.describe()).status == WorkflowExecutionStatus.RUNNING
    assert await details(asking) == "Stopped by admin API key: journey stopped"


# Asking and branching --------------------------------------------------------------------------


def survey() -> dict[str, Any]:
    return journey(
        "Menu",
        [
            ask("ask-option", "1 Product 2 Service", "option", on_timeout="too-late"),
            {
                "id": "route",
                "type": "branch",
                "branches": [
                    {"condition": "{{ answer | trim == '1' }}", "next": "product"},
                    {"condition": "variables.option | trim == '2'", "next": "service"},
                ],
                "else": "too-late",
            },
            send("product", "Product it is ({{ variables.option }})", next="done"),
            send("service", "Service it is", next="done"),
            send("too-late", "Write again whenever you like", next="done"),
            {"id": "done", "type": "end"},
        ],
    )


async def test_an_answered_ask_saves_the_reply_and_takes_its_branch(scene: Scene) -> None:
    journey_id = await scene.journey(survey())
    handle = await scene.enroll(journey_id)
    await scene.texts(1)
    asking = await scene.at_step(journey_id, "ask-option")
    assert asking.waiting_until is not None
    expected = (
        f"At step ask-option, waiting for a reply until {asking.waiting_until:%Y-%m-%d %H:%M} UTC"
    )
    await eventually(lambda: details_are(handle, expected), message=f"the details say {expected}")

    await scene.incoming(journey_id, " 1 ")
    assert await handle.result() == "completed"
    assert scene.sent() == ["1 Product 2 Service", "Product it is ( 1 )"]
    done = await scene.newest(journey_id)
    assert (done.variables, done.answer, done.current_step) == ({"option": " 1 "}, " 1 ", "product")
    assert (done.ended_by, done.end_reason) == ("journey", "reached the end step done")
    await keep_history(handle, "journey-ask-answered")


async def test_a_condition_without_braces_is_an_expression(scene: Scene) -> None:
    journey_id = await scene.journey(survey())
    handle = await scene.enroll(journey_id)
    await scene.at_step(journey_id, "ask-option")
    await scene.incoming(journey_id, "2")
    assert await handle.result() == "completed"
    assert scene.sent()[1:] == ["Service it is"]


async def test_an_ask_that_gets_no_reply_goes_to_on_timeout(scene: Scene) -> None:
    journey_id = await scene.journey(survey())
    handle = await scene.enroll(journey_id)
    await scene.at_step(journey_id, "ask-option")
    await scene.env.sleep(timedelta(minutes=61))
    assert await handle.result() == "completed"
    assert scene.sent() == ["1 Product 2 Service", "Write again whenever you like"]
    done = await scene.newest(journey_id)
    assert (done.variables, done.answer) == ({}, None)


# Handing over to other journeys ----------------------------------------------------------------


async def test_trigger_journey_starts_the_other_journey_as_a_child(scene: Scene) -> None:
    target = await scene.journey(
        {
            "name": "Product",
            "trigger": {"type": "manual"},
            "steps": [send("intro", "Product for {{ variables.ref }}"), {"id": "x", "type": "end"}],
        }
    )
    main = await scene.journey(
        journey(
            "Main",
            [send("hello", "Hello"), {"id": "go", "type": "trigger_journey", "journey_id": target}],
        )
    )
    parent = await scene.enroll(main, variables={"ref": "R-7"})
    assert await parent.result() == "handed_over"
    child = scene.handle(target)
    assert await child.result() == "completed"
    assert scene.sent() == ["Hello", "Product for R-7"]

    handed = await scene.newest(main)
    assert (handed.state, handed.ended_by, handed.end_reason) == (
        "handed_over",
        "step go",
        "handed over to 'Product'",
    )
    started = await scene.newest(target)
    assert started.parent_id == handed.id
    description = await child.describe()
    assert description.parent_id == parent.id
    assert await description.static_summary() == "Journey Product · contact ada"
    assert description.typed_search_attributes.get(JOURNEY) == target
    assert await details(parent) == "Ended: handed over to 'Product'"
    await keep_history(parent, "journey-hand-over")


async def test_a_menu_goes_to_a_sub_journey_and_back_to_its_menu_step(scene: Scene) -> None:
    main_steps = [
        send("welcome", "Welcome"),
        ask("menu", "1 Product", "main_option", on_timeout="bye"),
        {
            "id": "route",
            "type": "branch",
            "branches": [{"condition": "{{ answer == '1' }}", "next": "product"}],
            "else": "bye",
        },
        {"id": "product", "type": "trigger_journey", "journey_id": "tbd"},
        send("bye", "Bye"),
    ]
    main = await scene.journey(journey("Main menu", main_steps), publish=False)
    product = await scene.journey(
        {
            "name": "Product menu",
            "trigger": {"type": "manual"},
            "steps": [
                send("intro", "All about the product"),
                ask("menu", "0 Back", "product_option", on_timeout="done"),
                {
                    "id": "route",
                    "type": "branch",
                    "branches": [{"condition": "{{ answer == '0' }}", "next": "back"}],
                    "else": "done",
                },
                {"id": "back", "type": "trigger_journey", "journey_id": main, "start_at": "menu"},
                {"id": "done", "type": "end"},
            ],
        }
    )
    main_steps[3]["journey_id"] = product
    await scene.replace(main, journey("Main menu", main_steps))
    await scene.publish(main)

    first = await scene.enroll(main)
    first_run = (await first.describe()).run_id
    await scene.at_step(main, "menu")
    await scene.incoming(main, "1")
    await scene.at_step(product, "menu")
    await scene.incoming(product, "0")
    await scene.at_step(main, "menu")
    assert await scene.texts(5) == [
        "Welcome",
        "1 Product",
        "All about the product",
        "0 Back",
        "1 Product",  # back at the main menu's question, without the welcome
    ]
    await scene.incoming(main, "nothing")
    again = scene.handle(main)
    assert await again.result() == "completed"
    assert scene.sent()[-1] == "Bye"

    rows = await scene.enrollments(main)
    assert [r.state for r in rows] == ["handed_over", "completed"]
    assert rows[1].parent_id == (await scene.newest(product)).id
    # The same workflow id, a new run: the first one had closed when the child started.
    back = await again.describe()
    assert back.run_id != first_run
    assert back.parent_id == journey_workflow_id(scene.tenant.slug, product, "ada")
    original = scene.env.client.get_workflow_handle(first.id, run_id=first_run)
    assert (await original.describe()).parent_id is None


async def test_a_hand_over_to_a_journey_that_is_not_published_ends_with_the_reason(
    scene: Scene,
) -> None:
    draft = await scene.journey(
        journey("Draft", [send("x", "never sent")]),
        publish=False,
    )
    main = await scene.journey(
        journey("Main", [{"id": "go", "type": "trigger_journey", "journey_id": draft}])
    )
    handle = await scene.enroll(main)
    assert await handle.result() == "exited"
    row = await scene.newest(main)
    assert (row.ended_by, row.end_reason) == ("step go", "journey 'Draft' is draft, not published")
    assert await scene.enrollments(draft) == []


# Loops, steps with I/O, sends ------------------------------------------------------------------


async def test_a_loop_sends_on_every_visit_and_ends_past_max_jumps(scene: Scene) -> None:
    journey_id = await scene.journey(
        journey(
            "Loop",
            [send("tick", "tick"), {"id": "again", "type": "jump_to", "target": "tick"}],
            max_jumps=3,
        )
    )
    handle = await scene.enroll(journey_id)
    assert await handle.result() == "exited"
    assert scene.sent() == ["tick"] * 4
    keys = [r.headers["idempotency-key"] for r in scene.hook.requests]
    assert [k.split(":")[1] for k in keys] == ["tick#1", "tick#2", "tick#3", "tick#4"]
    row = await scene.newest(journey_id)
    assert (row.ended_by, row.end_reason) == (
        "journey",
        "more than 3 jumps (its max_jumps), the last one from step again to tick",
    )


async def test_http_request_update_contact_and_assign_steps(
    scene: Scene, box: SecretBox, webhook_receiver: WebhookReceiver
) -> None:
    with WebhookReceiver() as crm:
        crm.serve_json("/customers/ada", {"tier": "gold"})
        await scene.channel("inbox", webhook_receiver.base_url + "/inbox", box)
        journey_id = await scene.journey(
            journey(
                "Route to desk",
                [
                    {
                        "id": "lookup",
                        "type": "http_request",
                        "integration": {
                            "name": "crm",
                            "url": crm.base_url + "/customers/{{ contact.external_id }}",
                        },
                        "variable": "customer",
                    },
                    {
                        "id": "remember",
                        "type": "update_contact",
                        "attributes": {"tier": "{{ variables.customer.tier }}"},
                    },
                    {
                        "id": "desk",
                        "type": "assign",
                        "assignee": "{{ contact.attributes.tier }}-desk",
                        "kind": "queue",
                    },
                    send("done", "A {{ variables.customer.tier }} agent will write to you"),
                ],
            )
        )
        handle = await scene.enroll(journey_id)
        assert await handle.result() == "completed"
    inbox, message = webhook_receiver.requests
    assert inbox.path == "/inbox"
    assert inbox.json["source"] == {
        "type": "journey",
        "journey_id": journey_id,
        "step": "desk",
        "assignment": {"assignee": "gold-desk", "kind": "queue"},
    }
    assert message.json["message"]["text"] == "A gold agent will write to you"
    assert message.json["source"] == {"type": "journey", "journey_id": journey_id, "step": "done"}
    row = await scene.newest(journey_id)
    assert row.variables == {"customer": {"tier": "gold"}}
    async with scene.sessions() as session:
        ada = await find_contact(session, scene.tenant.id, "ada")
        assert ada is not None and ada.attributes == {"tier": "gold"}


async def test_a_step_that_cannot_work_ends_the_enrollment_with_the_reason(scene: Scene) -> None:
    journey_id = await scene.journey(
        journey("Broken", [send("hello", "Hi", channel="pager"), send("after", "never")])
    )
    handle = await scene.enroll(journey_id)
    assert await handle.result() == "exited"
    row = await scene.newest(journey_id)
    assert (row.ended_by, row.end_reason) == ("step hello", "failed: no channel 'pager'")
    assert scene.sent() == []


async def test_a_retried_send_is_sent_once(
    scene: Scene, settings: Settings, box: SecretBox
) -> None:
    from nudge.workers.worker import activities_for

    journey_id = await scene.journey(journey("Once", [send("hello", "Hello")]))
    async with transaction(scene.sessions) as session:
        found = await get_journey(session, scene.tenant.id, journey_id)
        ada = await find_contact(session, scene.tenant.id, "ada")
        assert ada is not None
        enrollment = await create_enrollment(session, found, ada, {})
    request = StepInput(
        tenant_id=scene.tenant.id,
        enrollment_id=enrollment.id,
        step_id="hello",
        key_prefix=f"journey/{scene.tenant.slug}/test",
    )
    async with loopback_http() as http:
        send_step = next(
            a
            for a in activities_for(settings, scene.sessions, box, http)
            if a.__name__ == "send_message"
        )
        env = ActivityEnvironment(client=scene.env.client)
        for _ in range(2):
            assert (await env.run(send_step, request)).active
        await env.run(send_step, request.model_copy(update={"visit": 2}))
    assert scene.sent() == ["Hello", "Hello"]
    keys = [r.headers["idempotency-key"] for r in scene.hook.requests]
    prefix = f"journey/{scene.tenant.slug}/test"
    assert keys == [f"{prefix}:hello#1:ada:chat", f"{prefix}:hello#2:ada:chat"]


async def test_a_stop_does_not_wait_for_a_send_that_is_still_retrying(scene: Scene) -> None:
    scene.hook.serve("/hook", Reply(status=503, body="down"))
    journey_id = await scene.journey(journey("Down", [send("hello", "Hi"), send("after", "Hi")]))
    handle = await scene.enroll(journey_id)
    await eventually(lambda: send_retrying(handle), message="the send fails and waits to retry")
    assert await scene.signal(
        journey_id, STOP_ENROLLMENT, Ending(by="agent ana", reason="provider down")
    )
    assert await handle.result() == "stopped"
    # Closed with the send left behind, never completed; "after" was never scheduled.
    sends = [a for a in await activity_runs(handle) if a.name == "send_journey_message"]
    assert [a.outcome for a in sends] == ["open"]
    tries = len(scene.hook.requests)
    # Well past the retries it had left (2 s, 4 s, 8 s ...): a closed run's send is not retried.
    await scene.env.sleep(timedelta(minutes=30))
    assert len(scene.hook.requests) == tries
    async with scene.sessions() as session:
        [delivery] = (
            await session.execute(select(Delivery).where(Delivery.tenant_id == scene.tenant.id))
        ).scalars()
    assert (delivery.status, delivery.tries) == ("retrying", tries)
    assert (await scene.newest(journey_id)).state == "stopped"


async def send_retrying(handle: WorkflowHandle[Any, Any]) -> bool:
    """True once the run's send has failed at least once and waits for its next try."""
    pending = (await handle.describe()).raw_description.pending_activities
    return any(p.activity_type.name == "send_journey_message" and p.attempt >= 2 for p in pending)


async def test_a_long_loop_continues_as_new_keeping_visits_and_jumps(scene: Scene) -> None:
    journey_id = await scene.journey(
        journey(
            "Long loop",
            [send("tick", "tick"), {"id": "again", "type": "jump_to", "target": "tick"}],
            max_jumps=1000,
        )
    )
    handle = await scene.enroll(journey_id)
    # 1001 sends, each a delivery stored and posted: about a minute on a quiet machine.
    await eventually(lambda: closed(handle), timeout=180, interval=0.2, message="the loop ends")
    history = await handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    assert started.continued_execution_run_id  # the history grew long: it continued as new
    row = await scene.newest(journey_id)
    assert (
        row.end_reason
        == "more than 1000 jumps (its max_jumps), the last one from step again to tick"
    )
    # Every visit sent once: visit counters went on across runs (a reset would repeat keys).
    keys = {r.headers["idempotency-key"] for r in scene.hook.requests}
    assert len(scene.hook.requests) == len(keys) == 1001


async def closed(handle: WorkflowHandle[Any, Any]) -> bool:
    return (await handle.describe()).status != WorkflowExecutionStatus.RUNNING
