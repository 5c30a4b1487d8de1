"""The outbox: what the API accepted reaches Temporal, also when Temporal was down at the
time, and a client's retry or a second relay never acts on it twice."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from nudge.models.db import transaction
from nudge.models.payloads import JourneyMessage
from nudge.models.signals import JOURNEY_MESSAGE
from nudge.models.tables import Enrollment, OutboxEntry
from nudge.runs.journeys import stage_signal
from nudge.runs.outbox import Relay
from tests.conftest import TenantKeys
from tests.utils.histories import signals_handled
from tests.utils.journeys import (
    ask,
    at_step,
    create,
    ended,
    enroll,
    journey,
    message,
    run_of,
    send,
    setup_contact,
)
from tests.utils.outage import pending, relay_all
from tests.utils.receivers import WebhookReceiver
from tests.utils.waiting import eventually

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture
def time_env(own_time_env: WorkflowEnvironment) -> WorkflowEnvironment:
    """Enrollments wait for replies: a leftover one must not hold the shared server's clock."""
    return own_time_env


def nurture() -> dict[str, Any]:
    """An `api` journey that greets, then waits an hour; an incoming message ends it."""
    return journey(
        "Nurture",
        steps=[send("hello", "Hello"), {"id": "pause", "type": "wait", "minutes": 60}],
        exit_conditions=["incoming_message"],
    )


async def waiting_in_nurture(
    api: httpx.AsyncClient, tenant: TenantKeys, hook: WebhookReceiver
) -> dict[str, Any]:
    """The nurture journey, with Ada enrolled and waiting at its pause; the journey."""
    await setup_contact(api, tenant, hook)
    run = await create(api, tenant, nurture())
    assert (await enroll(api, tenant, run["id"])).status_code == 201
    await at_step(api, tenant, run["id"], "pause")
    return run


async def test_an_event_accepted_while_temporal_is_down_is_completed_by_the_clients_retry(
    api: httpx.AsyncClient,
    temporal_down: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    run = await waiting_in_nurture(api, tenant, webhook_receiver)

    first = await message(temporal_down, tenant, "stop writing", "m-1")
    assert (first["status"], first["journeys_notified"]) == ("accepted", [run["id"]])
    assert await pending(sessions, tenant) == 1  # stored with the message, not yet told

    retry = await message(api, tenant, "stop writing", "m-1")
    assert retry["status"] == "duplicate"
    done = await ended(api, tenant, run["id"])
    assert (done["state"], done["end_reason"]) == ("exited", "incoming message")
    assert await pending(sessions, tenant) == 0


async def test_an_event_nobody_retries_is_relayed_once_temporal_is_back(
    api: httpx.AsyncClient,
    temporal_down: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    run = await waiting_in_nurture(api, tenant, webhook_receiver)

    await message(temporal_down, tenant, "stop writing", "m-1")
    await relay_all(time_env.client, sessions, tenant)

    done = await ended(api, tenant, run["id"])
    assert (done["state"], done["end_reason"]) == ("exited", "incoming message")
    assert await run_of(time_env, tenant, run["id"]).result() == "exited"


async def test_an_enrollment_accepted_while_temporal_is_down_starts_when_it_is_back(
    api: httpx.AsyncClient,
    temporal_down: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await setup_contact(api, tenant, webhook_receiver)
    run = await create(api, tenant, nurture())

    accepted = await enroll(temporal_down, tenant, run["id"])
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["state"] == "active"
    await relay_all(time_env.client, sessions, tenant)

    await at_step(api, tenant, run["id"], "pause")
    assert [r.json["message"]["text"] for r in webhook_receiver.requests] == ["Hello"]


async def test_a_journey_stopped_while_temporal_is_down_stops_its_runs_when_it_is_back(
    api: httpx.AsyncClient,
    temporal_down: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    run = await waiting_in_nurture(api, tenant, webhook_receiver)

    stopped = await temporal_down.post(f"/v1/journeys/{run['id']}/stop", headers=tenant.headers())
    assert stopped.status_code == 202, stopped.text
    # The database holds the stop at once (the run checks it before each send) ...
    done = await ended(api, tenant, run["id"])
    assert (done["state"], done["ended_by"]) == ("stopped", "admin API key")
    # ... and the run itself ends once the relay has told Temporal.
    await relay_all(time_env.client, sessions, tenant)
    assert await run_of(time_env, tenant, run["id"]).result() == "stopped"


async def test_a_repeated_event_changes_nothing_in_the_run(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await setup_contact(api, tenant, webhook_receiver)
    two_questions = journey(
        "Survey",
        steps=[ask("first", "First?", "a"), ask("second", "Second?", "b"), send("bye", "Bye")],
    )
    run = await create(api, tenant, two_questions)
    await enroll(api, tenant, run["id"])
    await at_step(api, tenant, run["id"], "first")
    reply = JourneyMessage(direction="incoming", channel="hook", text="yes", message_id="m-1")

    # The relay sent it, and could not tell that Temporal took it: it sends it again.
    handle = run_of(time_env, tenant, run["id"])
    for _ in range(2):
        await handle.signal(JOURNEY_MESSAGE.name, reply)
    await at_step(api, tenant, run["id"], "second")
    assert await signals_handled(handle) == 2
    other = reply.model_copy(update={"message_id": "m-2", "text": "no"})
    await handle.signal(JOURNEY_MESSAGE.name, other)
    assert await handle.result() == "completed"
    async with sessions() as session:
        enrollment = (
            await session.execute(select(Enrollment).where(Enrollment.journey_id == run["id"]))
        ).scalar_one()
    # The repeat did not answer the second question: the next message did.
    assert enrollment.variables == {"a": "yes", "b": "no"}


async def test_an_event_for_an_earlier_enrollment_is_ignored_by_a_later_one(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
) -> None:
    run = await waiting_in_nurture(api, tenant, webhook_receiver)
    late = JourneyMessage(
        direction="incoming", channel="hook", text="hi", message_id="m-1", enrollment_id="older"
    )
    handle = run_of(time_env, tenant, run["id"])
    await handle.signal(JOURNEY_MESSAGE.name, late)
    await eventually(lambda: _handled(handle), message="the run handles the signal")
    assert (await at_step(api, tenant, run["id"], "pause"))["state"] == "active"


async def _handled(handle: Any) -> bool:
    return await signals_handled(handle) == 1


async def test_a_signal_to_a_run_not_started_yet_waits_for_it(
    api: httpx.AsyncClient,
    temporal_down: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """An event routed to an enrollment whose run does not exist yet (its start is still in
    the outbox, or a hand-over is starting it) is kept until the run is there."""
    await setup_contact(api, tenant, webhook_receiver)
    run = await create(api, tenant, nurture())
    accepted = await enroll(temporal_down, tenant, run["id"])
    enrollment_id = accepted.json()["id"]
    async with transaction(sessions) as session:
        message_entry = stage_signal(
            session,
            tenant.id,
            tenant.slug,
            run["id"],
            "ada",
            JOURNEY_MESSAGE,
            JourneyMessage(
                direction="incoming",
                channel="hook",
                text="stop",
                message_id="m-1",
                enrollment_id=enrollment_id,
            ),
        )
    relay = Relay(time_env.client, sessions)
    # The signal goes first, before its run exists: it is put off, not dropped.
    [outcome] = await relay.relay_written([message_entry])
    assert outcome.outcome is None
    async with transaction(sessions) as session:
        await session.execute(
            update(OutboxEntry)
            .where(OutboxEntry.tenant_id == tenant.id)
            .values(due_at=OutboxEntry.created_at)
        )
    await relay_all(time_env.client, sessions, tenant)
    assert await run_of(time_env, tenant, run["id"]).result() == "exited"


async def test_a_repeated_assignment_event_is_acted_on_once(
    api: httpx.AsyncClient,
    temporal_down: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await setup_contact(api, tenant, webhook_receiver)
    body = nurture()
    body["settings"]["exit_conditions"] = ["manual_assignment"]
    run = await create(api, tenant, body)
    await enroll(api, tenant, run["id"])
    await at_step(api, tenant, run["id"], "pause")
    event = {"contact_id": "ada", "assignee": "grace", "manual": True, "event_id": "as-1"}
    service = tenant.headers("service")

    first = await temporal_down.post("/v1/events/assignments", json=event, headers=service)
    assert first.json() == {"status": "accepted", "journeys_notified": [run["id"]]}
    again = await api.post("/v1/events/assignments", json=event, headers=service)
    assert again.json()["status"] == "duplicate"
    assert await run_of(time_env, tenant, run["id"]).result() == "exited"
    async with sessions() as session:
        entries = (
            (await session.execute(select(OutboxEntry).where(OutboxEntry.tenant_id == tenant.id)))
            .scalars()
            .all()
        )
    assert [(e.event_key, e.outcome) for e in entries if e.event_key] == [
        ("assignment:as-1", "delivered")
    ]


async def test_what_a_request_relayed_is_closed_without_a_relay_pass(
    api: httpx.AsyncClient,
    tenant: TenantKeys,
    webhook_receiver: WebhookReceiver,
    time_env: WorkflowEnvironment,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Entries a request relayed are closed in batches after the answer (not one write per
    request), and nothing is left for the relays to repeat."""
    await waiting_in_nurture(api, tenant, webhook_receiver)
    await message(api, tenant, "stop writing", "m-1")

    async def closed() -> bool:
        return await pending(sessions, tenant) == 0

    await eventually(closed, message="the request's entries are closed")
    async with sessions() as session:
        entries = (
            (await session.execute(select(OutboxEntry).where(OutboxEntry.tenant_id == tenant.id)))
            .scalars()
            .all()
        )
    assert sorted((e.name, e.outcome) for e in entries) == [
        ("JourneyEnrollment", "started"),
        ("message", "delivered"),
    ]
