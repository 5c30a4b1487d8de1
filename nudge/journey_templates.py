"""Journey templates: several journeys in one file that refer to each other as ``@<key>``.

A template is imported as a whole, in one transaction: every journey is created, the
symbolic references are replaced by the new ids, and every journey is published. The
shipped multi-level chat menu (``nudge/templates/chat-menu.json``) is one; ``nudge dev``
imports it into the demo tenant on first start.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.errors import InvalidInput
from nudge.models.db import create_engine, session_factory, transaction
from nudge.models.journeys import (
    JourneyDefinition,
    JourneyPublic,
    TriggerJourneyStep,
    check_journey_references,
)
from nudge.models.tables import Channel, Journey, JourneyVersion
from nudge.settings import Settings
from nudge.store.journeys import create_journey, journey_public, set_journey_status
from nudge.store.tenants import find_tenant

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).parent / "templates"
CHAT_MENU = "chat-menu"
TEMPLATE_KEY = r"^[a-z0-9][a-z0-9_-]{0,62}$"
REFERENCE_PREFIX = "@"
# The channels the chat menu needs in the demo tenant: it answers on the contact's
# `last_used` channel (the walk-through writes as "console") and its `assign` steps tell
# the channel `inbox`. Both print to the worker's log.
DEMO_CHANNELS = ("console", "inbox")

Loc = tuple[str | int, ...]


class JourneyTemplate(BaseModel):
    """Journeys that refer to each other; a `trigger_journey` step names another as `@key`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "template": "two-level menu",
                    "journeys": {
                        "main": {
                            "name": "Main menu",
                            "trigger": {"type": "incoming_message", "keywords": ["menu"]},
                            "steps": [
                                {"id": "go", "type": "trigger_journey", "journey_id": "@more"}
                            ],
                        },
                        "more": {
                            "name": "More",
                            "trigger": {"type": "manual"},
                            "steps": [{"id": "done", "type": "end"}],
                        },
                    },
                }
            ]
        },
    )

    template: Annotated[str, Field(max_length=100)] | None = Field(
        default=None, description="The template's name."
    )
    description: Annotated[str, Field(max_length=2000)] | None = None
    journeys: Annotated[
        dict[Annotated[str, Field(pattern=TEMPLATE_KEY)], dict[str, Any]],
        Field(min_length=1, max_length=50),
    ] = Field(description="key → journey definition; `@key` in `journey_id` names another one.")


def load_template(name: str) -> JourneyTemplate:
    """A template shipped with Nudge, by file name without `.json`."""
    text = (TEMPLATES_DIR / f"{name}.json").read_text(encoding="utf-8")
    return JourneyTemplate.model_validate(json.loads(text))


def _validated(template: JourneyTemplate) -> dict[str, JourneyDefinition]:
    """Every definition checked, with the problems of all of them at once."""
    problems: list[tuple[Loc, str]] = []
    definitions: dict[str, JourneyDefinition] = {}
    for key, raw in template.journeys.items():
        try:
            definitions[key] = JourneyDefinition.model_validate(raw)
        except ValidationError as exc:
            problems += [(("body", "journeys", key, *e["loc"]), e["msg"]) for e in exc.errors()]
            continue
        problems += _unknown_references(key, definitions[key], template)
    if problems:
        raise InvalidInput(problems)
    return definitions


def _unknown_references(
    key: str, definition: JourneyDefinition, template: JourneyTemplate
) -> list[tuple[Loc, str]]:
    """A template refers to its own journeys only: an id from another tenant means nothing."""
    problems: list[tuple[Loc, str]] = []
    for i, step in enumerate(definition.steps):
        if not isinstance(step, TriggerJourneyStep):
            continue
        target = step.journey_id
        loc: Loc = ("body", "journeys", key, "steps", i, "journey_id")
        if not target.startswith(REFERENCE_PREFIX):
            problems.append((loc, f"name a journey of this template as '@<key>', not {target!r}"))
        elif target[1:] not in template.journeys:
            problems.append((loc, f"no journey {target[1:]!r} in this template"))
        elif target[1:] == key:
            problems.append((loc, "a journey cannot trigger itself; use `jump_to`"))
    return problems


def _resolved(definition: JourneyDefinition, ids: dict[str, str]) -> JourneyDefinition:
    steps = [
        step.model_copy(update={"journey_id": ids[step.journey_id[1:]]})
        if isinstance(step, TriggerJourneyStep)
        else step
        for step in definition.steps
    ]
    return definition.model_copy(update={"steps": steps})


async def import_template(
    session: AsyncSession, tenant_id: str, template: JourneyTemplate
) -> list[JourneyPublic]:
    """Create and publish every journey of the template (the caller commits).

    Raises ``InvalidInput`` naming ``body.journeys.<key>.…`` for any problem; then nothing
    is stored, as long as the caller rolls back.
    """
    definitions = _validated(template)
    # Journeys of a menu refer to each other (the main menu to "Product", "Product" back to
    # the main menu), so all are created first, and only then can references be resolved.
    journeys = {
        key: await create_journey(session, tenant_id, definition)
        for key, definition in definitions.items()
    }
    ids = {key: journey.id for key, journey in journeys.items()}
    for key, journey in journeys.items():
        resolved = _resolved(definitions[key], ids)
        await _check_references(session, tenant_id, key, journey.id, resolved)
        # Still version 1 of a journey nobody else can see yet: it gets the real ids.
        row = await session.get_one(JourneyVersion, (journey.id, journey.version))
        row.definition = resolved.model_dump(mode="json", by_alias=True)
    # Journeys only reachable from others go first, so no entry point is published while
    # a journey it hands over to is not (the transaction makes this invisible anyway).
    for journey in sorted(journeys.values(), key=lambda j: j.trigger_type != "manual"):
        await set_journey_status(session, journey, "published")
    await session.flush()
    return [await journey_public(session, journey) for journey in journeys.values()]


async def _check_references(
    session: AsyncSession, tenant_id: str, key: str, journey_id: str, definition: JourneyDefinition
) -> None:
    try:
        await check_journey_references(
            session, tenant_id, definition, journey_id=journey_id, require_published=False
        )
    except InvalidInput as exc:
        # check_journey_references speaks of a single journey's body.
        raise InvalidInput(
            [(("body", "journeys", key, *loc[1:]), msg) for loc, msg in exc.problems]
        ) from None


# The demo tenant ----------------------------------------------------------------------------


async def seed_demo_journeys(settings: Settings, tenant_slug: str = "demo") -> bool:
    """Import the chat menu into the demo tenant when it has no journey yet; True if it did.

    Also creates the `log` channels the menu uses there (`console`, `inbox`) when missing.
    """
    engine = create_engine(settings.resolved_database_url)
    try:
        async with transaction(session_factory(engine)) as session:
            tenant = await find_tenant(session, tenant_slug)
            if tenant is None or await _has_journeys(session, tenant.id):
                return False
            await _ensure_log_channels(session, tenant.id)
            imported = await import_template(session, tenant.id, load_template(CHAT_MENU))
    finally:
        await engine.dispose()
    log.info("imported the chat-menu template into %r: %d journeys", tenant_slug, len(imported))
    return True


async def _has_journeys(session: AsyncSession, tenant_id: str) -> bool:
    found = await session.execute(select(Journey.id).where(Journey.tenant_id == tenant_id).limit(1))
    return found.first() is not None


async def _ensure_log_channels(session: AsyncSession, tenant_id: str) -> None:
    existing = set(
        (
            await session.execute(
                select(Channel.slug).where(
                    Channel.tenant_id == tenant_id, Channel.slug.in_(DEMO_CHANNELS)
                )
            )
        ).scalars()
    )
    for slug in DEMO_CHANNELS:
        if slug not in existing:
            session.add(Channel(tenant_id=tenant_id, slug=slug, type="log", config={}))
    await session.flush()
