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

from nudge.activities.campaign import CampaignActivities
from nudge.activities.delivery_fallback import DeliveryFallbackActivities
from nudge.activities.delivery_resend import DeliveryResendActivities
from nudge.activities.followup_poller import FollowUpPollerActivities
from nudge.activities.followup_record import FollowUpRecordActivities
from nudge.activities.journey import JourneyActivities
from nudge.activities.notification import NotificationActivities
from nudge.activities.opening_watch import OpeningWatchActivities
from nudge.activities.send_windows import SendWindowActivities
from nudge.egress import EgressPolicy, tenant_http_client
from nudge.messaging.delivery import Deliverer
from nudge.metrics import use_temporal_runtime
from nudge.models.db import create_engine, session_factory
from nudge.runs.fallbacks import FallbackWatcher
from nudge.security import ActionTokens, SecretBox
from nudge.settings import Settings
from nudge.temporal_client import connect
from nudge.workers.bytecode import cache_nudge_bytecode
from nudge.workers.metrics_server import serve_metrics
from nudge.workers.relay import outbox_relay
from nudge.workflows.campaign import CampaignWorkflow
from nudge.workflows.delivery_fallback import DeliveryFallbackWorkflow
from nudge.workflows.delivery_resend import DeliveryResendWorkflow
from nudge.workflows.followup_poller import FollowUpPollerWorkflow
from nudge.workflows.followup_record import FollowUpRecordWorkflow
from nudge.workflows.journey import JourneyEnrollmentWorkflow
from nudge.workflows.journey_stop import JourneyStopAllWorkflow
from nudge.workflows.notification import SendNotificationWorkflow
from nudge.workflows.opening_watch import OpeningWatchWorkflow

log = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN = timedelta(seconds=3)

WORKFLOWS: Sequence[type] = (
    SendNotificationWorkflow,
    FollowUpPollerWorkflow,
    FollowUpRecordWorkflow,
    JourneyEnrollmentWorkflow,
    JourneyStopAllWorkflow,
    DeliveryResendWorkflow,
    DeliveryFallbackWorkflow,
    CampaignWorkflow,
    OpeningWatchWorkflow,
)


def egress_policy(settings: Settings) -> EgressPolicy:
    return EgressPolicy.parse(settings.egress_allow)


def activities_for(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    box: SecretBox,
    http: httpx.AsyncClient,
) -> list[Any]:
    deliverer = Deliverer(
        sessions,
        box,
        http,
        egress_policy(settings),
        public_url=settings.public_url,
        watch_fallback=FallbackWatcher(settings),
    )
    notifications = NotificationActivities(sessions, deliverer)
    poller = FollowUpPollerActivities(sessions, box, http, task_queue=settings.task_queue)
    records = FollowUpRecordActivities(
        sessions,
        box,
        http,
        deliverer,
        ActionTokens(settings.secret_key_value()),
        public_url=settings.public_url,
    )
    journeys = JourneyActivities(sessions, box, http, deliverer)
    return [
        notifications.deliver_notification,
        notifications.record_notification_failure,
        poller.poll_followup,
        poller.stop_followup_records,
        records.load_record_plan,
        records.run_attempt,
        records.run_actions,
        records.end_record,
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
        journeys.check_hours,
        journeys.send_survey,
        journeys.save_survey_answer,
        DeliveryResendActivities(sessions, deliverer).resend_delivery,
        DeliveryFallbackActivities(sessions, deliverer).fall_back_if_undelivered,
        *_campaign_activities(CampaignActivities(sessions, deliverer)),
        *_opening_activities(OpeningWatchActivities(sessions, deliverer)),
        SendWindowActivities(sessions).window_opens,
    ]


def _opening_activities(watch: OpeningWatchActivities) -> list[Any]:
    return [watch.plan_opening, watch.notify_waiting]


def _campaign_activities(campaign: CampaignActivities) -> list[Any]:
    return [campaign.load_plan, campaign.move, campaign.send_batch]


# Modules that workflow code imports and that are loaded once, outside the sandbox: pure
# data and constants with no I/O, so one class identity is shared with activity code and
# nothing is re-imported on every run. Everything else of Nudge (the workflows themselves
# above all) is imported inside the sandbox, so its restrictions apply to it; activity
# classes are passed through where a workflow imports them, under
# `workflow.unsafe.imports_passed_through()`.
SANDBOX_PASSTHROUGH = (
    "pydantic",
    "nudge.models.payloads",
    "nudge.models.signals",
    "nudge.naming",
    "nudge.workflows.policies",
)


def sandbox_runner() -> SandboxedWorkflowRunner:
    """The workflow sandbox, passing through only ``SANDBOX_PASSTHROUGH``."""
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*SANDBOX_PASSTHROUGH)
    )


def build_worker(
    client: Client,
    task_queue: str,
    activities: list[Any],
    graceful_shutdown: timedelta = timedelta(0),
    cached_runs: int = 1000,
) -> Worker:
    cache_nudge_bytecode()  # before the first run: the sandbox imports its modules per run
    return Worker(
        client,
        task_queue=task_queue,
        workflows=list(WORKFLOWS),
        activities=activities,
        workflow_runner=sandbox_runner(),
        graceful_shutdown_timeout=graceful_shutdown,
        max_cached_workflows=cached_runs,
    )


@asynccontextmanager
async def worker_resources(settings: Settings) -> AsyncIterator[list[Any]]:
    """The activities with their database engine and HTTP client, closed on exit."""
    engine = create_engine(settings.resolved_database_url)
    # The one client for tenants' traffic: checked destinations, no retries of its own
    # (every attempt is Temporal's), no redirects followed (a secret header would follow).
    async with tenant_http_client(egress_policy(settings)) as http:
        try:
            box = SecretBox(settings.secret_key_value())
            yield activities_for(settings, session_factory(engine), box, http)
        finally:
            await engine.dispose()


async def run_worker(settings: Settings) -> None:
    use_temporal_runtime()  # before connecting: the SDK's metrics go to the worker's /metrics
    client = await connect(settings)
    async with worker_resources(settings) as activities, serve_metrics(settings):
        # A poll or a send under way gets a moment to finish rather than being cut off.
        worker = build_worker(
            client,
            settings.task_queue,
            activities,
            graceful_shutdown=GRACEFUL_SHUTDOWN,
            cached_runs=settings.worker_cached_runs,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info(
            "worker polling task queue %r on %s", settings.task_queue, settings.temporal_address
        )
        async with worker, outbox_relay(client, settings):
            await stop.wait()
        log.info("worker stopped")
