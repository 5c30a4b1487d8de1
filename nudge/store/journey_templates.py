"""Importing a journey template into a tenant. Functions take the session and never commit."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from nudge.errors import InvalidInput
from nudge.models.journey_templates import (
    JourneyTemplate,
    resolved_references,
    validated_definitions,
)
from nudge.models.journeys import JourneyDefinition, JourneyPublic
from nudge.models.tables import JourneyVersion
from nudge.store.journey_references import check_journey_references
from nudge.store.journeys import create_journey, journey_public, set_journey_status


async def import_template(
    session: AsyncSession, tenant_id: str, template: JourneyTemplate
) -> list[JourneyPublic]:
    """Create and publish every journey of the template (the caller commits).

    Raises ``InvalidInput`` naming ``body.journeys.<key>.…`` for any problem; then nothing
    is stored, as long as the caller rolls back.
    """
    definitions = validated_definitions(template)
    # Journeys of a menu refer to each other (the main menu to "Product", "Product" back to
    # the main menu), so all are created first, and only then can references be resolved.
    journeys = {
        key: await create_journey(session, tenant_id, definition)
        for key, definition in definitions.items()
    }
    ids = {key: journey.id for key, journey in journeys.items()}
    for key, journey in journeys.items():
        resolved = resolved_references(definitions[key], ids)
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
