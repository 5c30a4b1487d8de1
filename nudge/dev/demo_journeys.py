"""The demo tenant's journeys: the shipped chat menu, imported on `nudge dev`'s first start."""

from __future__ import annotations

import logging

from nudge.models.db import create_engine, session_factory, transaction
from nudge.models.journey_templates import CHAT_MENU, load_template
from nudge.settings import Settings
from nudge.store.directory import ensure_log_channels
from nudge.store.journey_templates import import_template
from nudge.store.journeys import tenant_has_journeys
from nudge.store.tenants import find_tenant

log = logging.getLogger(__name__)

# The channels the chat menu needs in the demo tenant: it answers on the contact's
# `last_used` channel (the walk-through writes as "console") and its `assign` steps tell
# the channel `inbox`. Both print to the worker's log.
DEMO_CHANNELS = ("console", "inbox")


async def seed_demo_journeys(settings: Settings, tenant_slug: str = "demo") -> bool:
    """Import the chat menu into the demo tenant when it has no journey yet; True if it did.

    Also creates the `log` channels the menu uses there (`console`, `inbox`) when missing.
    """
    engine = create_engine(settings.resolved_database_url)
    try:
        async with transaction(session_factory(engine)) as session:
            tenant = await find_tenant(session, tenant_slug)
            if tenant is None or await tenant_has_journeys(session, tenant.id):
                return False
            await ensure_log_channels(session, tenant.id, DEMO_CHANNELS)
            imported = await import_template(session, tenant.id, load_template(CHAT_MENU))
    finally:
        await engine.dispose()
    log.info("imported the chat-menu template into %r: %d journeys", tenant_slug, len(imported))
    return True
