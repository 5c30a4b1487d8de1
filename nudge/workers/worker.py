"""The worker process: every workflow and activity of Nudge on one task queue."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from nudge.activities.delivery import Deliverer
from nudge.activities.followups import FollowUpActivities
from nudge.activities.journeys import JourneyActivities
from nudge.activities.notifications import NotificationActivities
from nudge.models.db import create_engine, session_factory
from nudge.security import ActionTokens, SecretBox
from nudge.settings import Settings
from nudge.temporal_client import connect
from nudge.workflows.followup_poller import FollowUpPoller
from nudge.workflows.followup_record import FollowUpRecord
from nudge.workflows.journey import JourneyEnrollment
from nudge.workflows.journey_stop import JourneyStopAll
from nudge.workflows.notification import SendNotification

log = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN = timedelta(seconds=3)

WORKFLOWS: Sequence[type] = (
    SendNotification,
    FollowUpPoller,
    FollowUpRecord,
    JourneyEnrollment,
    JourneyStopAll,
)


def activities_for(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    box: SecretBox,
    http: httpx.AsyncClient,
) -> list[Any]:
    deliverer = Deliverer(sessions, box, http)
    notifications = NotificationActivities(sessions, deliverer)
    followups = FollowUpActivities(
        sessions,
        box,
        http,
        deliverer,
        ActionTokens(settings.secret_key_value()),
        public_url=settings.public_url,
        task_queue=settings.task_queue,
    )
    journeys = JourneyActivities(sessions, box, http, deliverer)
    return [
        notifications.deliver_notification,
        notifications.record_notification_failure,
        followups.poll_followup,
        followups.stop_followup_records,
        followups.load_record_plan,
        followups.run_attempt,
        followups.run_actions,
        followups.end_record,
        journeys.load_journey_plan,
        journeys.record_progress,
        journeys.send_message,
        journeys.save_answer,
        journeys.evaluate_branch,
        journeys.update_contact,
        journeys.http_request,
        journeys.assign,
        journeys.hand_over,
        journeys.end_enrollment,
        journeys.eject_enrollments,
    ]


def sandbox_runner() -> SandboxedWorkflowRunner:
    # Our payload models are plain pydantic; passing them through keeps one class identity
    # between workflow and activity code and avoids re-importing them on every run.
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules("nudge", "pydantic")
    )


def build_worker(
    client: Client,
    task_queue: str,
    activities: list[Any],
    graceful_shutdown: timedelta = timedelta(0),
) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=list(WORKFLOWS),
        activities=activities,
        workflow_runner=sandbox_runner(),
        graceful_shutdown_timeout=graceful_shutdown,
    )


@asynccontextmanager
async def worker_resources(settings: Settings) -> AsyncIterator[list[Any]]:
    """The activities with their database engine and HTTP client, closed on exit."""
    engine = create_engine(settings.resolved_database_url)
    # Our own retries are Temporal's: the HTTP client never retries by itself.
    async with httpx.AsyncClient(follow_redirects=False) as http:
        try:
            box = SecretBox(settings.secret_key_value())
            yield activities_for(settings, session_factory(engine), box, http)
        finally:
            await engine.dispose()


async def run_worker(settings: Settings) -> None:
    client = await connect(settings)
    async with worker_resources(settings) as activities:
        # A poll or a send under way gets a moment to finish rather than being cut off.
        worker = build_worker(
            client, settings.task_queue, activities, graceful_shutdown=GRACEFUL_SHUTDOWN
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info(
            "worker polling task queue %r on %s", settings.task_queue, settings.temporal_address
        )
        async with worker:
            await stop.wait()
        log.info("worker stopped")
