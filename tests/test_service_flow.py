"""The service flow: `check_hours` and `survey` steps, the survey metrics, and the shipped
service-flow template, through the API with a real worker on the time-skipping server and a
real webhook receiver.

Each test that runs journeys has a Temporal server of its own: runs stay open (a survey
nobody answers), and `check_hours` reads the server's clock, which tests move forward.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from nudge.models.journey_templates import TEMPLATES_DIR, load_template, validated_definitions
from nudge.models.journeys import survey_score
from nudge.models.tables import Contact, SurveyResponse
from tests.conftest import TenantKeys, problems
from tests.utils.delivery_runs import current_details
from tests.utils.histories import waiting_on_a_timer
from tests.utils.journeys import (
    HOOK,
    at_step,
    create,
    ended,
    enroll,
    journey,
    message,
    run_of,
    send,
    sent_texts,
    setup_contact,
    text,
)
from tests.utils.receivers import Reply, WebhookReceiver
from tests.utils.waiting import eventually, received

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
ALWAYS_OPEN = {"timezone": "UTC", "always_open": True}
CLOSED = "We are closed. Shall we tell you when we open? (yes/no)"
needs_worker = pytest.mark.usefixtures("worker")


@pytest.fixture
def time_env(own_time_env: WorkflowEnvironment) -> WorkflowEnvironment:
    return own_time_env


def open_in_two_days(**more: Any) -> dict[str, Any]:
    """Closed now and tomorrow; open all day the day after (UTC)."""
    day = DAYS[(datetime.now(UTC).weekday() + 2) % 7]
    return {"timezone": "UTC", "week": {day: ["00:00-24:00"]}, **more}


def check_hours(schedule: str, open_at: str = "open", closed_at: str = "closed") -> dict[str, Any]:
    return {
        "id": "hours",
        "type": "check_hours",
        "business_hours": schedule,
        "open": open_at,
        "closed": closed_at,
    }


def survey(kind: str, **more: Any) -> dict[str, Any]:
    return {
        "id": "survey",
        "type": "survey",
        "kind": kind,
        "channel": HOOK,
        "question": text(f"Your {kind} score?"),
        "timeout_minutes": 60,
        **more,
    }


def service_flow() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((TEMPLATES_DIR / "service-flow.json").read_text())
    return loaded


async def put(api: httpx.AsyncClient, tenant: TenantKeys, path: str, body: Any) -> None:
    answer = await api.put(path, json=body, headers=tenant.headers())
    assert answer.status_code == 200, answer.text


async def survey_metrics(
    api: httpx.AsyncClient, tenant: TenantKeys, **params: str
) -> dict[str, Any]:
    answer = await api.get("/v1/metrics/surveys", params=params, headers=tenant.headers())
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def texts_to(hook: WebhookReceiver, contact: str) -> list[str]:
    return [
        r.json["message"]["text"]
        for r in hook.requests
        if r.json["channel"] == HOOK and r.json["recipient"]["external_id"] == contact
    ]


async def texts_to_are(hook: WebhookReceiver, contact: str, count: int) -> list[str]:
    """The texts sent to ``contact`` on the hook, once there are ``count``."""

    def enough() -> list[str] | None:
        found = texts_to(hook, contact)
        assert len(found) <= count, found
        return found if len(found) == count else None

    got: list[str] = await eventually(enough, message=f"{count} texts to {contact}")
    return got


async def take_survey(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    hook: WebhookReceiver,
    journey_id: str,
    contact: str,
    *replies: str,
) -> list[str]:
    """Enroll the contact and answer each message the survey sends with the next reply;
    every text the contact got, once its enrollment has ended (or waits unanswered)."""
    await put(api, tenant, f"/v1/contacts/{contact}", {"name": contact.title()})
    assert (await enroll(api, tenant, journey_id, contact)).status_code == 201
    for n, reply in enumerate(replies, start=1):
        await texts_to_are(hook, contact, n)
        await at_step(api, tenant, journey_id, "survey", contact)
        await message(api, tenant, reply, f"{contact}-{n}", contact=contact)
    if not replies:
        await at_step(api, tenant, journey_id, "survey", contact)
        return await texts_to_are(hook, contact, 1)
    await ended(api, tenant, journey_id, contact)
    return texts_to(hook, contact)


async def _responses_are(
    sessions: async_sessionmaker[AsyncSession],
    tenant: TenantKeys,
    expected: dict[str, tuple[str, str, int | None, str | None]],
) -> bool:
    return await responses(sessions, tenant) == expected


async def responses(
    sessions: async_sessionmaker[AsyncSession], tenant: TenantKeys
) -> dict[str, tuple[str, str, int | None, str | None]]:
    """contact → (kind, status, score, reply) of the tenant's stored survey responses."""
    async with sessions() as session:
        rows = await session.execute(
            select(Contact.external_id, SurveyResponse)
            .join(Contact, Contact.id == SurveyResponse.contact_id)
            .where(SurveyResponse.tenant_id == tenant.id)
        )
        return {
            contact: (row.kind, row.status, row.score, row.reply) for contact, row in rows.all()
        }


# Definitions ---------------------------------------------------------------------------------


def test_the_service_flow_template_validates_as_written() -> None:
    template = load_template("service-flow")
    [(key, definition)] = validated_definitions(template).items()
    # Taken as written: nothing dropped, renamed or defaulted away.
    stored = definition.model_dump(mode="json", by_alias=True, exclude_unset=True)
    assert stored == template.journeys[key]
    types = {step.type for step in definition.steps}
    assert {"check_hours", "survey", "assign", "update_contact", "branch"} <= types


@pytest.mark.parametrize(
    ("kind", "reply", "score"),
    [
        ("csat", "5", 5),
        ("csat", " 1 \n", 1),
        ("csat", "0", None),
        ("csat", "6", None),
        ("csat", "5 stars", None),
        ("nps", "0", 0),
        ("nps", "10", 10),
        ("nps", "11", None),
        ("nps", "-1", None),
        ("nps", "", None),
    ],
)
def test_a_score_is_a_whole_number_of_the_scale_alone(
    kind: str, reply: str, score: int | None
) -> None:
    assert survey_score(kind, reply) == score


async def test_check_hours_and_survey_steps_are_checked_like_the_others(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    admin = tenant.headers()
    end = {"id": "done", "type": "end"}
    graph = journey(
        "Bad targets",
        steps=[
            check_hours("default", "nowhere", "survey"),
            survey("nps", on_timeout="gone"),
            end,
        ],
    )
    assert problems(await api.post("/v1/journeys", json=graph, headers=admin)) == {
        "body.steps.0.open": "no step with id 'nowhere'",
        "body.steps.1.on_timeout": "no step with id 'gone'",
    }
    onward = journey(
        "Onward", steps=[{**check_hours("default", "done", "done"), "next": "done"}, end]
    )
    assert problems(await api.post("/v1/journeys", json=onward, headers=admin)) == {
        "body.steps.0.next": "a check_hours step does not continue to another step; remove `next`"
    }
    fields = journey(
        "Bad fields",
        steps=[
            check_hours("Not Valid", "survey", "survey"),
            survey("ces"),
            survey("csat", id="late", timeout_minutes=0),
            survey("csat", id="names", question=text("{{ secret }}")),
            survey("nps", id="retry", invalid_message=text("{{ nope }}")),
        ],
    )
    found = problems(await api.post("/v1/journeys", json=fields, headers=admin))
    assert set(found) == {
        "body.steps.0.business_hours",
        "body.steps.1.kind",
        "body.steps.2.timeout_minutes",
        "body.steps.3.question.text",
        "body.steps.4.invalid_message.text",
    }
    assert found["body.steps.3.question.text"] == (
        "unknown variable 'secret': this template knows answer, contact, recipient, variables"
    )
    assert found["body.steps.4.invalid_message.text"].startswith("unknown variable 'nope'")


# check_hours ---------------------------------------------------------------------------------


@needs_worker
async def test_check_hours_goes_the_closed_way_now_and_the_open_way_at_the_opening(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await setup_contact(api, tenant, webhook_receiver)
    await put(api, tenant, "/v1/business-hours/desk", open_in_two_days())
    steps = [
        check_hours("desk"),
        send("open", "We are open", next="done"),
        send("closed", "We are closed"),
        {"id": "done", "type": "end"},
    ]
    journey_id = (await create(api, tenant, journey("Desk", steps=steps)))["id"]

    assert (await enroll(api, tenant, journey_id)).status_code == 201
    assert (await ended(api, tenant, journey_id))["state"] == "completed"
    assert await sent_texts(webhook_receiver, 1) == ["We are closed"]

    # The run's clock, not the machine's, decides: two days on (skipped), it is open.
    await time_env.sleep(timedelta(days=2))
    assert (await enroll(api, tenant, journey_id)).status_code == 201
    assert await run_of(time_env, tenant, journey_id).result() == "completed"
    assert await sent_texts(webhook_receiver, 2) == ["We are closed", "We are open"]

    # The journey names the schedule: it cannot be deleted from under it.
    refused = await api.delete("/v1/business-hours/desk", headers=tenant.headers())
    assert refused.status_code == 409
    assert "journey 'Desk' step 'hours'" in refused.json()["detail"]


@needs_worker
async def test_an_unknown_schedule_counts_as_open_and_the_run_says_so(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    await setup_contact(api, tenant, webhook_receiver)
    question = {
        "id": "open",
        "type": "ask",
        "channel": HOOK,
        "message": text("How can we help?"),
        "variable": "need",
        "timeout_minutes": 60,
    }
    steps = [check_hours("nowhere"), question, send("closed", "We are closed")]
    journey_id = (await create(api, tenant, journey("Unknown hours", steps=steps)))["id"]
    # The question's send is held at the receiver: meanwhile the run's details are still
    # those of the check (an `ask` says what it waits for only once its question left).
    webhook_receiver.respond_with(Reply(delay_seconds=3))
    assert (await enroll(api, tenant, journey_id)).status_code == 201
    await received(webhook_receiver, 1)
    handle = run_of(time_env, tenant, journey_id)
    expected = "At step hours, no business hours 'nowhere', so counted as open: on to step open"
    assert await eventually(lambda: _details_are(handle, expected), message=expected)
    assert await sent_texts(webhook_receiver, 1) == ["How can we help?"]


async def _details_are(handle: Any, expected: str) -> bool:
    return await current_details(handle) == expected


# Surveys -------------------------------------------------------------------------------------


@needs_worker
async def test_surveys_are_stored_per_contact_and_counted_exactly(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await setup_contact(api, tenant, webhook_receiver)
    thanks = send("thanks", "Thanks, {{ variables.score }}")
    csat = await create(
        api, tenant, journey("CSAT", steps=[survey("csat", variable="score"), thanks])
    )
    retry = text("Please answer with a number from 0 to 10")
    nps_steps = [survey("nps", variable="score", invalid_message=retry), thanks]
    nps = await create(api, tenant, journey("NPS", steps=nps_steps))
    hook = webhook_receiver

    # CSAT has no invalid_message: a reply that is no score is stored as such, and on it goes.
    for contact, reply in (("ada", "5"), ("bob", "4"), ("cy", "2")):
        assert await take_survey(api, tenant, hook, csat["id"], contact, reply) == [
            "Your csat score?",
            f"Thanks, {reply}",
        ]
    assert await take_survey(api, tenant, hook, csat["id"], "dee", "0") == [
        "Your csat score?",
        "Thanks, ",
    ]
    assert await take_survey(api, tenant, hook, csat["id"], "eve") == ["Your csat score?"]
    stored = {
        "ada": ("csat", "answered", 5, "5"),
        "bob": ("csat", "answered", 4, "4"),
        "cy": ("csat", "answered", 2, "2"),
        "dee": ("csat", "invalid", None, "0"),
        # Unanswered: kept as sent once the question has left (just after the receiver got it).
        "eve": ("csat", "sent", None, None),
    }
    await eventually(
        lambda: _responses_are(sessions, tenant, stored), message="the responses are stored"
    )

    # NPS asks once more after a reply that is no score; the second reply is kept as it is.
    for contact, reply in (("ann", "10"), ("ben", "9"), ("cat", "8"), ("dan", " 6 ")):
        assert await take_survey(api, tenant, hook, nps["id"], contact, reply) == [
            "Your nps score?",
            f"Thanks, {reply.strip()}",
        ]
    assert await take_survey(api, tenant, hook, nps["id"], "eva", "11", "7") == [
        "Your nps score?",
        "Please answer with a number from 0 to 10",
        "Thanks, 7",
    ]
    assert await take_survey(api, tenant, hook, nps["id"], "fin", "great!", "eleven") == [
        "Your nps score?",
        "Please answer with a number from 0 to 10",
        "Thanks, ",
    ]
    rows = await responses(sessions, tenant)
    assert (rows["dan"], rows["eva"], rows["fin"]) == (
        ("nps", "answered", 6, " 6 "),
        ("nps", "answered", 7, "7"),
        ("nps", "invalid", None, "eleven"),
    )

    figures = await survey_metrics(api, tenant)
    assert figures["journey"] is None
    assert figures["csat"] == {
        "sent": 5,
        "answered": 3,
        "invalid": 1,
        "response_rate": 60.0,
        "mean": 3.67,
        "scores": {"1": 0, "2": 1, "3": 0, "4": 1, "5": 1},
        "satisfied": 2,
        "csat": 66.67,
    }
    assert figures["nps"] == {
        "sent": 6,
        "answered": 5,
        "invalid": 1,
        "response_rate": 83.33,
        "mean": 8.0,
        "scores": {str(s): int(s in (6, 7, 8, 9, 10)) for s in range(11)},
        "promoters": 2,
        "passives": 2,
        "detractors": 1,
        "nps": 20.0,
    }
    only_nps = await survey_metrics(api, tenant, journey=nps["id"])
    assert (only_nps["journey"], only_nps["csat"]["sent"], only_nps["nps"]["sent"]) == (
        nps["id"],
        0,
        6,
    )
    before = await survey_metrics(api, tenant, to="2020-01-01T00:00:00Z")
    assert before["csat"]["sent"] == before["nps"]["sent"] == 0
    assert (before["csat"]["response_rate"], before["nps"]["nps"]) == (None, None)


async def test_the_survey_metrics_refuse_a_bad_period_or_journey(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    async def refused(**params: str) -> dict[str, str]:
        answer = await api.get("/v1/metrics/surveys", params=params, headers=tenant.headers())
        return problems(answer)

    at = "2026-03-01T00:00:00Z"
    assert await refused(**{"from": at, "to": at}) == {"query.from": "must be before `to`"}
    assert await refused(**{"from": "2025-01-01T00:00:00Z", "to": at}) == {
        "query.from": "at most 366 days before `to`"
    }
    assert "query.to" in await refused(to="2026-03-01")  # a date-time needs its time and offset
    assert await refused(journey="nope") == {"query.journey": "no journey 'nope'"}
    forbidden = await api.get("/v1/metrics/surveys", headers=tenant.headers("service"))
    assert forbidden.status_code == 403


# The service-flow template -------------------------------------------------------------------


async def _wait_for_service(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    time_env: WorkflowEnvironment,
    journey_id: str,
) -> None:
    """Skip the template's service time once the run waits on its timer."""
    await at_step(api, tenant, journey_id, "service-time")
    handle = run_of(time_env, tenant, journey_id)
    await eventually(lambda: waiting_on_a_timer(handle), message="the run waits for the service")
    await time_env.sleep(timedelta(minutes=31))


@needs_worker
async def test_the_service_flow_takes_a_first_time_then_a_returning_contact_to_the_survey(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    hook = webhook_receiver
    await setup_contact(api, tenant, hook)
    await put(api, tenant, "/v1/business-hours/default", ALWAYS_OPEN)
    imported = await api.post("/v1/journeys/import", json=service_flow(), headers=tenant.headers())
    assert imported.status_code == 201, imported.text
    [flow] = imported.json()
    assert (flow["name"], flow["status"]) == ("Service flow", "published")
    flow_id = flow["id"]

    # First visit: the FAQ, "talk to a person", technical support, the service, the survey.
    assert (await message(api, tenant, "Hi, I need help", "m1"))["journeys_started"] == [flow_id]
    await at_step(api, tenant, flow_id, "faq")
    await message(api, tenant, "0", "m2")
    await at_step(api, tenant, flow_id, "queues")
    await message(api, tenant, "2", "m3")
    await _wait_for_service(api, tenant, time_env, flow_id)
    await at_step(api, tenant, flow_id, "survey")
    await message(api, tenant, "5", "m4")
    assert (await ended(api, tenant, flow_id))["state"] == "completed"
    sent = await received(hook, 8)
    texts = [r.json["message"]["text"] for r in sent]
    assert texts[0].startswith("Hi Ada! Welcome to our service channel.")
    assert texts[1].startswith("Frequently asked questions. Reply with a number:\n1 ")
    assert texts[2].startswith("Which team do you need?")
    assert texts[3].startswith("Thanks! I am passing you to Technical support.")
    assert (sent[4].json["channel"], texts[4]) == (
        "inbox",
        "Assign Ada to the queue technical-support",
    )
    assert texts[5:] == [
        "Thank you for talking to us, Ada. We hope we could help.",
        "How satisfied are you with the service you got? Reply with a number from 1 (not at"
        " all) to 5 (very satisfied).",
        "Thank you for your rating!",
    ]
    contact = (await api.get("/v1/contacts/ada", headers=tenant.headers())).json()
    assert contact["attributes"]["service_flow_visited"] == "yes"

    # Returning: another greeting; a question, then Other matters (anything unlisted).
    await message(api, tenant, "help", "m5")
    await at_step(api, tenant, flow_id, "faq")
    await message(api, tenant, "1", "m6")
    await at_step(api, tenant, flow_id, "faq-more")
    await message(api, tenant, "0", "m7")
    await at_step(api, tenant, flow_id, "queues")
    await message(api, tenant, "my invoice is wrong", "m8")
    await _wait_for_service(api, tenant, time_env, flow_id)
    await at_step(api, tenant, flow_id, "survey")
    await message(api, tenant, "9", "m9")  # no CSAT score: asked once more
    await received(hook, 18)  # the re-ask
    await message(api, tenant, "4", "m10")
    assert (await ended(api, tenant, flow_id))["state"] == "completed"
    texts = [r.json["message"]["text"] for r in await received(hook, 19)][8:]
    assert texts[0] == "Welcome back, Ada! Good to hear from you again."
    assert texts[2].startswith("We answer Monday to Friday")
    assert texts[3].startswith("Anything else?")
    assert texts[5].startswith("Thanks! I am passing you to Other matters.")
    assert texts[6] == "Assign Ada to the queue other-matters"
    assert texts[9:] == [
        "Please reply with just a number from 1 to 5.",
        "Thank you for your rating!",
    ]

    figures = await survey_metrics(api, tenant, journey=flow_id)
    assert {k: figures["csat"][k] for k in ("sent", "answered", "invalid", "csat", "mean")} == {
        "sent": 2,
        "answered": 2,
        "invalid": 0,
        "csat": 100.0,
        "mean": 4.5,
    }


@needs_worker
async def test_the_service_flow_ends_on_the_closed_path_while_the_default_hours_are_closed(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
) -> None:
    hook = webhook_receiver
    await setup_contact(api, tenant, hook)
    closed_message = {"enabled": True, "message": text(CLOSED)}
    await put(
        api,
        tenant,
        "/v1/business-hours/default",
        open_in_two_days(unavailable_message=closed_message),
    )
    imported = await api.post("/v1/journeys/import", json=service_flow(), headers=tenant.headers())
    [flow] = imported.json()

    await message(api, tenant, "help", "m1")
    await at_step(api, tenant, flow["id"], "faq")
    await message(api, tenant, "0", "m2")
    await at_step(api, tenant, flow["id"], "queues")
    await message(api, tenant, "1", "m3")
    done = await ended(api, tenant, flow["id"])
    assert (done["state"], done["current_step"]) == ("completed", "remember")
    # The closed message went once, by itself (closed hours); the journey just ended: no
    # hand-over, no survey.
    texts = [r.json["message"]["text"] for r in await received(hook, 4)]
    assert texts.count(CLOSED) == 1
    assert [t[:20] for t in texts if t != CLOSED] == [
        "Hi Ada! Welcome to o",
        "Frequently asked que",
        "Which team do you ne",
    ]
    assert await ada_attributes(api, tenant) == {"service_queue": "billing", "visited": "yes"}
    assert all(r.json["channel"] == HOOK for r in hook.requests)
    assert len(hook.requests) == 4


async def ada_attributes(api: httpx.AsyncClient, tenant: TenantKeys) -> dict[str, str]:
    attributes = (await api.get("/v1/contacts/ada", headers=tenant.headers())).json()["attributes"]
    return {
        "service_queue": attributes["service_queue"],
        "visited": attributes["service_flow_visited"],
    }


async def test_a_survey_on_a_channel_that_does_not_exist_is_a_422(
    api: httpx.AsyncClient, tenant: TenantKeys
) -> None:
    definition = journey("Survey", steps=[survey("csat", channel="nowhere")])
    answer = await api.post("/v1/journeys", json=definition, headers=tenant.headers())
    assert problems(answer) == {"body.steps.0.channel": "no channel 'nowhere'"}
