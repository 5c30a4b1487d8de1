"""Journey definitions: limits, templates, the graph of steps, and references to other journeys."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from nudge.errors import InvalidInput
from nudge.models.db import transaction
from nudge.models.journeys import (
    JOURNEY_EXAMPLE,
    BranchStep,
    JourneyDefinition,
    Trigger,
)
from nudge.store.journey_references import check_journey_references
from nudge.store.journeys import create_journey, set_journey_status
from tests.conftest import TenantKeys

CONTRACT = Path(__file__).parent.parent / "docs" / "journeys-contract.md"
CHAT_MENU = Path(__file__).parent.parent / "nudge" / "templates" / "chat-menu.json"

Loc = tuple[str | int, ...]


def contract_example() -> dict[str, Any]:
    """The definition in docs/journeys-contract.md, verbatim."""
    block = re.search(r"```json\n(.*?)```", CONTRACT.read_text(), re.DOTALL)
    assert block is not None
    data: dict[str, Any] = json.loads(block.group(1))
    return data


def example() -> dict[str, Any]:
    return copy.deepcopy(JOURNEY_EXAMPLE)


def problems(data: dict[str, Any]) -> dict[Loc, str]:
    with pytest.raises(ValidationError) as caught:
        JourneyDefinition.model_validate(data)
    return {tuple(e["loc"]): e["msg"] for e in caught.value.errors()}


def steps(*items: dict[str, Any]) -> dict[str, Any]:
    return {"name": "J", "trigger": {"type": "api"}, "steps": list(items)}


def send(step_id: str, **more: Any) -> dict[str, Any]:
    text = more.pop("text", "hi")
    return {
        "id": step_id,
        "type": "send_message",
        "channel": "last_used",
        "message": {"kind": "text", "text": text},
        **more,
    }


# What validates ------------------------------------------------------------------------------


def test_the_contract_example_validates_as_is() -> None:
    defn = JourneyDefinition.model_validate(contract_example())
    assert [s.id for s in defn.steps] == ["welcome", "ask-option", "route", "product", "goodbye"]
    route = defn.step("route")
    assert isinstance(route, BranchStep) and route.else_ == "welcome"
    assert defn.settings.exit_conditions == [
        "incoming_message",
        "outgoing_message",
        "manual_assignment",
    ]
    assert defn.following("welcome") == "ask-option"
    assert defn.following("product") is None  # a trigger_journey step does not fall through
    stored = defn.model_dump(mode="json", by_alias=True)
    assert stored["steps"][2]["else"] == "welcome"
    assert JourneyDefinition.model_validate(stored) == defn


@pytest.mark.parametrize("key", ["main", "product", "service", "about", "sales"])
def test_the_chat_menu_template_validates(key: str) -> None:
    journeys = json.loads(CHAT_MENU.read_text().replace('"@', '"journey-'))["journeys"]
    defn = JourneyDefinition.model_validate(journeys[key])
    # Taken as written: nothing dropped, renamed or defaulted away.
    assert defn.model_dump(mode="json", by_alias=True, exclude_unset=True) == journeys[key]
    # Its hand-overs go to the template's other journeys.
    targets = {getattr(s, "journey_id", None) for s in defn.steps if s.type == "trigger_journey"}
    assert targets <= {f"journey-{other}" for other in journeys if other != key}


def test_defaults() -> None:
    defn = JourneyDefinition.model_validate(steps(send("a")))
    assert defn.settings.max_jumps == 100
    assert defn.settings.allow_agents_stop is False
    assert defn.settings.exit_conditions == []


def test_a_manual_trigger_and_a_step_reached_only_by_a_timeout_are_fine() -> None:
    data = steps(
        {
            "id": "q",
            "type": "ask",
            "channel": "chat",
            "message": {"kind": "text", "text": "?"},
            "variable": "v",
            "timeout_minutes": 525_600,
            "on_timeout": "late",
            "next": "done",
        },
        {"id": "late", "type": "wait", "minutes": 1},
        {"id": "done", "type": "end"},
    )
    data["trigger"] = {"type": "manual"}
    defn = JourneyDefinition.model_validate(data)
    assert defn.trigger.type == "manual"
    assert [s.id for s in defn.steps] == ["q", "late", "done"]
    # "late" is kept, reached only when the question times out; an answer goes to "done".
    asking = defn.step("q")
    assert (asking.type, getattr(asking, "on_timeout", None)) == ("ask", "late")
    assert (defn.following("q"), defn.following("late")) == ("done", "done")


# The graph of steps ----------------------------------------------------------------------------


def test_step_ids_are_unique() -> None:
    assert problems(steps(send("a"), send("b"), send("a"))) == {
        ("steps", 2, "id"): "another step already has the id 'a'"
    }


@pytest.mark.parametrize(
    ("step", "loc"),
    [
        (send("a", next="nowhere"), ("steps", 0, "next")),
        ({"id": "a", "type": "jump_to", "target": "nowhere"}, ("steps", 0, "target")),
        (
            {"id": "a", "type": "branch", "branches": [{"condition": "1", "next": "nowhere"}]},
            ("steps", 0, "branches", 0, "next"),
        ),
        (
            {
                "id": "a",
                "type": "branch",
                "branches": [{"condition": "1", "next": "z"}],
                "else": "nowhere",
            },
            ("steps", 0, "else"),
        ),
        (
            {
                "id": "a",
                "type": "ask",
                "channel": "chat",
                "message": {"kind": "text", "text": "?"},
                "variable": "v",
                "timeout_minutes": 5,
                "on_timeout": "nowhere",
            },
            ("steps", 0, "on_timeout"),
        ),
    ],
)
def test_every_target_exists(step: dict[str, Any], loc: Loc) -> None:
    assert problems(steps(step, {"id": "z", "type": "end"})) == {loc: "no step with id 'nowhere'"}


@pytest.mark.parametrize("kind", ["end", "jump_to", "trigger_journey"])
def test_steps_that_do_not_fall_through_have_no_next(kind: str) -> None:
    step: dict[str, Any] = {"id": "a", "type": kind, "next": "b"}
    step.update({"jump_to": {"target": "b"}, "trigger_journey": {"journey_id": "j"}}.get(kind, {}))
    assert problems(steps(step, send("b"))) == {
        ("steps", 0, "next"): f"a {kind} step does not continue to another step; remove `next`"
    }


def test_a_branch_has_else_or_next_not_both() -> None:
    branch = {
        "id": "a",
        "type": "branch",
        "branches": [{"condition": "1", "next": "b"}],
        "else": "b",
        "next": "b",
    }
    assert problems(steps(branch, send("b"))) == {
        ("steps", 0, "branch", "next"): "give `else` or `next`, not both"
    }


@pytest.mark.parametrize(
    "stopper",
    [
        {"id": "stop", "type": "end"},
        {"id": "stop", "type": "jump_to", "target": "a"},
        {"id": "stop", "type": "trigger_journey", "journey_id": "j"},
    ],
)
def test_a_step_nothing_leads_to_is_refused(stopper: dict[str, Any]) -> None:
    assert problems(steps(send("a"), stopper, send("orphan"))) == {
        ("steps", 2, "id"): "step 'orphan' cannot be reached from the first step 'a'"
    }


def test_the_last_step_without_next_ends_and_loops_are_reachable() -> None:
    loop = JourneyDefinition.model_validate(
        steps(send("a", next="c"), send("b", next="a"), send("c", next="b"))
    )
    assert (loop.following("a"), loop.following("c")) == ("c", "b")
    last = JourneyDefinition.model_validate(steps(send("a"), send("b")))
    assert last.following("b") is None


# Limits and templates --------------------------------------------------------------------------


@pytest.mark.parametrize("minutes", [0, 525_601])
def test_waits_are_one_minute_to_a_year(minutes: int) -> None:
    found = problems(steps({"id": "w", "type": "wait", "minutes": minutes}))
    assert list(found) == [("steps", 0, "wait", "minutes")]


@pytest.mark.parametrize("max_jumps", [0, 1001])
def test_max_jumps_is_one_to_a_thousand(max_jumps: int) -> None:
    data = example()
    data["settings"]["max_jumps"] = max_jumps
    assert list(problems(data)) == [("settings", "max_jumps")]


def test_only_a_message_trigger_has_keywords() -> None:
    data = example()
    data["trigger"] = {"type": "api", "keywords": ["menu"]}
    assert problems(data) == {
        ("trigger", "keywords"): "only an `incoming_message` trigger has keywords"
    }


def test_unknown_exit_conditions_and_step_types_are_refused() -> None:
    data = example()
    data["settings"]["exit_conditions"] = ["incoming_message", "tuesday"]
    data["steps"][0]["type"] = "teleport"
    assert set(problems(data)) == {("settings", "exit_conditions", 1), ("steps", 0)}


@pytest.mark.parametrize(
    ("step", "loc"),
    [
        (
            {
                "id": "b",
                "type": "branch",
                "branches": [{"condition": "{{ answer == }}", "next": "b"}],
            },
            ("steps", 0, "branch", "branches", 0, "condition"),
        ),
        (
            {"id": "b", "type": "branch", "branches": [{"condition": "answer ==", "next": "b"}]},
            ("steps", 0, "branch", "branches", 0, "condition"),
        ),
        (
            send("s", text="Hi {{ contact.name"),
            ("steps", 0, "send_message", "message", "text", "text"),
        ),
        (
            {"id": "u", "type": "update_contact", "attributes": {"tier": "{% if %}"}},
            ("steps", 0, "update_contact", "attributes", "tier"),
        ),
        (
            {"id": "a", "type": "assign", "assignee": "{{ x", "kind": "queue"},
            ("steps", 0, "assign", "assignee"),
        ),
        (
            {
                "id": "h",
                "type": "http_request",
                "integration": {"name": "crm", "url": "https://crm/{{ id"},
                "variable": "v",
            },
            ("steps", 0, "http_request", "integration", "url"),
        ),
    ],
)
def test_templates_and_conditions_compile(step: dict[str, Any], loc: Loc) -> None:
    found = problems(steps(step))
    assert list(found) == [loc]
    assert "template does not compile" in found[loc]


def test_variables_and_attribute_names_are_identifiers() -> None:
    bad = {"id": "u", "type": "update_contact", "attributes": {"not ok": "x"}}
    assert list(problems(steps(bad))) == [
        ("steps", 0, "update_contact", "attributes", "not ok", "[key]")
    ]


def test_keywords_match_whole_words_in_any_case() -> None:
    menu = Trigger(type="incoming_message", keywords=["menu", "talk to sales"])
    assert menu.matches("Show me the MENU, please")
    assert menu.matches("I want to Talk to Sales")
    assert not menu.matches("menus")
    assert not menu.matches("hello")
    assert Trigger(type="incoming_message").matches("anything at all")
    assert not Trigger(type="api").matches("menu")


# References that need the database -------------------------------------------------------------


def trigger(target: str, start_at: str | None = None) -> dict[str, Any]:
    return steps(
        send("hello"),
        {"id": "go", "type": "trigger_journey", "journey_id": target, "start_at": start_at},
    )


async def saved(
    sessions: async_sessionmaker[AsyncSession], tenant: TenantKeys, publish: bool
) -> str:
    async with transaction(sessions) as session:
        journey = await create_journey(
            session, tenant.id, JourneyDefinition.model_validate(steps(send("menu")))
        )
        if publish:
            await set_journey_status(session, journey, "published")
        return journey.id


async def reference_problems(
    sessions: async_sessionmaker[AsyncSession],
    tenant: TenantKeys,
    data: dict[str, Any],
    **options: Any,
) -> dict[Loc, str]:
    async with sessions() as session:
        try:
            await check_journey_references(
                session, tenant.id, JourneyDefinition.model_validate(data), **options
            )
        except InvalidInput as exc:
            return dict(exc.problems)
    return {}


async def test_a_trigger_step_needs_a_published_journey_of_the_tenant_with_that_step(
    sessions: async_sessionmaker[AsyncSession],
    make_tenant: Callable[[], Awaitable[TenantKeys]],
) -> None:
    acme, globex = await make_tenant(), await make_tenant()
    published, draft = await saved(sessions, acme, True), await saved(sessions, acme, False)
    elsewhere = await saved(sessions, globex, True)
    go: Loc = ("body", "steps", 1, "journey_id")

    assert await reference_problems(sessions, acme, trigger(published, "menu")) == {}
    assert await reference_problems(sessions, acme, trigger(elsewhere)) == {
        go: f"no journey {elsewhere!r}"
    }
    assert await reference_problems(sessions, acme, trigger(draft)) == {
        go: "journey 'J' is draft; publish it first"
    }
    assert await reference_problems(sessions, acme, trigger(draft), require_published=False) == {}
    assert await reference_problems(sessions, acme, trigger(published, "nope")) == {
        ("body", "steps", 1, "start_at"): "journey 'J' has no step 'nope'"
    }
    assert await reference_problems(sessions, acme, trigger(published), journey_id=published) == {
        go: "a journey cannot trigger itself; use `jump_to`"
    }


async def test_channels_and_secrets_must_exist(
    sessions: async_sessionmaker[AsyncSession], tenant: TenantKeys
) -> None:
    data = steps(
        send("hello", channel="pager"),
        {
            "id": "h",
            "type": "http_request",
            "integration": {
                "name": "crm",
                "url": "https://crm.example.com",
                "headers": {"Authorization": "Bearer {{ secrets.CRM }}"},
            },
            "variable": "v",
        },
    )
    assert await reference_problems(sessions, tenant, data) == {
        ("body", "steps", 0, "channel"): "no channel 'pager'",
        ("body", "steps", 1, "integration"): "no secret 'CRM'; create it with PUT /v1/secrets/CRM",
    }
