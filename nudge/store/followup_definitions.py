"""Saving follow-up definitions: every change is a new version, nothing half-written."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.errors import InvalidInput
from nudge.models.followup_bundle import Requirements
from nudge.models.followups import (
    FollowUpDefinition,
    FollowUpPublic,
    referenced_channel,
    secret_references,
)
from nudge.models.tables import FollowUp, FollowUpVersion, Secret, utcnow
from nudge.store.directory import find_channel
from nudge.store.followups import definition_at
from nudge.store.pagination import PageRequest, keyset_page


async def check_references(
    session: AsyncSession, tenant_id: str, definition: FollowUpDefinition
) -> None:
    """Unknown channels and secrets are 422s naming where they are used."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    channel = referenced_channel(definition)
    if channel is not None and await find_channel(session, tenant_id, channel) is None:
        problems.append((("body", "channel"), f"no channel {channel!r}"))
    known = set(
        (await session.execute(select(Secret.name).where(Secret.tenant_id == tenant_id))).scalars()
    )
    for loc, name in secret_references(definition):
        if name not in known:
            problems.append((loc, f"no secret {name!r}; create it with PUT /v1/secrets/{name}"))
    if problems:
        raise InvalidInput(problems)


async def create_followup(
    session: AsyncSession, tenant_id: str, definition: FollowUpDefinition
) -> FollowUp:
    await check_references(session, tenant_id, definition)
    followup = FollowUp(
        tenant_id=tenant_id, name=definition.name, status=definition.status, version=1
    )
    session.add(followup)
    await session.flush()
    session.add(
        FollowUpVersion(
            followup_id=followup.id, version=1, definition=definition.model_dump(mode="json")
        )
    )
    await session.flush()
    return followup


async def save_new_version(
    session: AsyncSession, followup: FollowUp, definition: FollowUpDefinition
) -> FollowUp:
    await check_references(session, followup.tenant_id, definition)
    followup.version += 1
    followup.name = definition.name
    followup.status = definition.status
    followup.updated_at = utcnow()
    session.add(
        FollowUpVersion(
            followup_id=followup.id,
            version=followup.version,
            definition=definition.model_dump(mode="json"),
        )
    )
    await session.flush()
    return followup


async def public(session: AsyncSession, followup: FollowUp) -> FollowUpPublic:
    definition = await definition_at(session, followup.id, followup.version)
    return FollowUpPublic(
        **{**definition.model_dump(), "status": followup.status, "name": followup.name},
        id=followup.id,
        version=followup.version,
        last_poll=followup.last_poll,
        created_at=followup.created_at,
        updated_at=followup.updated_at,
    )


async def list_followups(session: AsyncSession, tenant_id: str) -> list[FollowUp]:
    rows = await session.execute(
        select(FollowUp)
        .where(FollowUp.tenant_id == tenant_id, FollowUp.status != "deleted")
        .order_by(FollowUp.created_at, FollowUp.id)
    )
    return list(rows.scalars())


async def followups_page(
    session: AsyncSession, tenant_id: str, page: PageRequest
) -> tuple[list[FollowUp], str | None]:
    """The tenant's follow-ups (deleted ones left out), oldest first."""
    query = select(FollowUp).where(FollowUp.tenant_id == tenant_id, FollowUp.status != "deleted")
    rows, next_cursor = await keyset_page(session, query, FollowUp.created_at, FollowUp.id, page)
    return [followup for (followup,) in rows], next_cursor


async def missing_references(
    session: AsyncSession, tenant_id: str, needs: Requirements
) -> Requirements:
    """Which of the channels and secrets an import needs this tenant lacks."""
    channels = [c for c in needs.channels if await find_channel(session, tenant_id, c) is None]
    known = set(
        (await session.execute(select(Secret.name).where(Secret.tenant_id == tenant_id))).scalars()
    )
    return Requirements(channels=channels, secrets=[s for s in needs.secrets if s not in known])


async def import_followup(
    session: AsyncSession, tenant_id: str, definition: FollowUpDefinition, *, runnable: bool
) -> FollowUp:
    """Create an imported follow-up; one that lacks a channel or secret starts inactive."""
    status = definition.status if runnable else "inactive"
    followup = FollowUp(tenant_id=tenant_id, name=definition.name, status=status, version=1)
    session.add(followup)
    await session.flush()
    stored = definition.model_copy(update={"status": status}).model_dump(mode="json")
    session.add(FollowUpVersion(followup_id=followup.id, version=1, definition=stored))
    await session.flush()
    return followup


def set_status(followup: FollowUp, status: str) -> str:
    """Set the follow-up's status (`active`, `inactive`, `deleted`); the status it had."""
    was, followup.status, followup.updated_at = followup.status, status, utcnow()
    return was
