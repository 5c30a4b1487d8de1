"""The FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from nudge import __version__
from nudge.api import inbox_pages
from nudge.api.body_limit import BodyLimit
from nudge.api.errors import install_error_handlers
from nudge.api.input_guard import refuse_unstorable_input
from nudge.api.openapi import install_openapi
from nudge.api.path_guard import EncodedSlashGuard
from nudge.api.rate_limits import RateLimits
from nudge.api.routes import (
    actions,
    agents,
    api_keys,
    business_hours,
    campaigns,
    channels,
    closed_replies,
    contacts,
    deliveries,
    events,
    followups,
    groups,
    health,
    inbox,
    inbox_history,
    journeys,
    message_metrics,
    metrics,
    notifications,
    secrets,
    senders,
    surveys,
    webhooks,
)
from nudge.egress import EgressPolicy, tenant_http_client
from nudge.metrics import use_temporal_runtime
from nudge.models.db import create_engine, session_factory
from nudge.runs.outbox import DoneMarker
from nudge.security import ActionTokens, SecretBox
from nudge.settings import Settings
from nudge.temporal_client import connect

DESCRIPTION = """
Nudge chases people so your teams do not have to: follow-ups polled from your ITSM or CRM,
customer journeys, and individual notifications, each run as a durable Temporal workflow.

Authenticate with `Authorization: Bearer <API key>`. Keys belong to one tenant and have a
role: `admin` (definitions and directory), `service` (notifications, events), `agent` (inbox).
"""


def create_app(
    settings: Settings,
    *,
    sessions: async_sessionmaker[AsyncSession] | None = None,
    temporal: Client | None = None,
) -> FastAPI:
    """The API. Tests pass their own sessions and client; production makes its own."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = None
        if sessions is None:
            engine = create_engine(settings.resolved_database_url)
        app.state.settings = settings
        app.state.sessions = sessions or session_factory(engine)  # type: ignore[arg-type]
        if temporal is None:
            use_temporal_runtime()  # the client's SDK metrics go to this process's /metrics
        app.state.temporal = temporal or await connect(settings)
        app.state.box = SecretBox(settings.secret_key_value())
        app.state.tokens = ActionTokens(settings.secret_key_value())
        app.state.rate_limits = RateLimits(settings)
        app.state.outbox_done = DoneMarker(app.state.sessions)
        # Calls the API makes for tenants (a sender's rating): checked like the workers'.
        app.state.http = tenant_http_client(EgressPolicy.parse(settings.egress_allow))
        try:
            yield
        finally:
            await app.state.http.aclose()
            await app.state.outbox_done.close()
            if engine is not None:
                await engine.dispose()

    app = FastAPI(
        title="Nudge",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        dependencies=[Depends(refuse_unstorable_input)],
    )
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(BodyLimit)
    app.add_middleware(EncodedSlashGuard)
    routers = (
        health,
        metrics,
        contacts,
        groups,
        channels,
        secrets,
        api_keys,
        business_hours,
        notifications,
        deliveries,
        senders,
        message_metrics,
        surveys,
        followups,
        journeys,
        events,
        closed_replies,
        campaigns,
        webhooks,
        actions,
    )
    for module in routers:
        app.include_router(module.router)
    if settings.env == "development":
        # Sample data for trying follow-ups; never part of a production API, which never
        # imports the development-only package.
        from nudge.dev.sample_itsm import router as sample_itsm

        app.include_router(sample_itsm)
    app.include_router(journeys.contact_router)
    app.include_router(message_metrics.campaign_router)
    # The inbox: admins' agents, queues and access profiles; agents' interactions and notes.
    for inbox_router in (
        agents.router,
        agents.queue_router,
        agents.profile_router,
        # Before inbox.router: its `/{interaction_id}` would take `/history`.
        inbox_history.router,
        inbox.router,
        inbox.notes_router,
        inbox.metrics_router,
    ):
        app.include_router(inbox_router)
    # The agents' web page at /inbox (sign-in with an agent key), outside the OpenAPI document.
    inbox_pages.install(app)
    return app
