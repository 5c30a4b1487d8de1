"""The demo tenant's journeys: the shipped templates (the chat menu, the service flow),
imported on `nudge dev`'s first start."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.models.db import create_engine, session_factory, transaction
from nudge.models.journey_templates import CHAT_MENU, JourneyTemplate, load_template
from nudge.models.tables import Journey
from nudge.settings import Settings
from nudge.store.directory import ensure_log_channels
from nudge.store.journey_templates import import_template
from nudge.store.tenants import find_tenant

log = logging.getLogger(__name__)

SERVICE_FLOW = "service-flow"
DEMO_TEMPLATES = (CHAT_MENU, SERVICE_FLOW)
# The channels the templates need in the demo tenant: they answer on the contact's
# `last_used` channel (the walk-through writes as "console") and their `assign` steps tell
# the channel `inbox`. Both print to the worker's log.
DEMO_CHANNELS = ("console", "inbox")


async def seed_demo_journeys(settings: Settings, tenant_slug: str = "demo") -> bool:
    """Import each demo template the demo tenant has none of the journeys of (by name), so
    a data directory from before a template shipped gets it too; True if any was imported.

    Also creates the `log` channels the templates use there (`console`, `inbox`) when missing.
    """
    engine = create_engine(settings.resolved_database_url)
    imported: dict[str, int] = {}
    try:
        async with transaction(session_factory(engine)) as session:
            tenant = await find_tenant(session, tenant_slug)
            if tenant is None:
                return False
            names = await _journey_names(session, tenant.id)
            for name in DEMO_TEMPLATES:
                template = load_template(name)
                if _names_of(template) & names:
                    continue
                await ensure_log_channels(session, tenant.id, DEMO_CHANNELS)
                imported[name] = len(await import_template(session, tenant.id, template))
    finally:
        await engine.dispose()
    for name, count in imported.items():
        log.info("imported the %s template into %r: %d journeys", name, tenant_slug, count)
    return bool(imported)


async def _journey_names(session: AsyncSession, tenant_id: str) -> set[str]:
    rows = await session.execute(select(Journey.name).where(Journey.tenant_id == tenant_id))
    return {name for (name,) in rows}


def _names_of(template: JourneyTemplate) -> set[str]:
    return {str(journey.get("name")) for journey in template.journeys.values()}
