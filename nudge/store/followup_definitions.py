"""Saving follow-up definitions: every change is a new version, nothing half-written."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.errors import InvalidInput
from nudge.models.followup_bundle import Requirements, requirements
from nudge.models.followups import (
    FollowUpDefinition,
    FollowUpPublic,
    referenced_channel,
    secret_references,
)
from nudge.models.secret_hosts import (
    followup_secret_uses,
    placement_problems,
    secret_destinations,
    unapproved_destinations,
)
from nudge.models.tables import FollowUp, FollowUpVersion, Secret, utcnow
from nudge.store.directory import find_channel, secret_hosts, secret_problems
from nudge.store.followups import definition_at
from nudge.store.pagination import PageRequest, keyset_page


async def check_references(
    session: AsyncSession, tenant_id: str, definition: FollowUpDefinition
) -> None:
    """Unknown channels and secrets, secrets used where secrets may not go (anywhere but an
    integration's headers, query and body) and secrets sent to a host their
    ``allowed_hosts`` leave out are 422s naming where they are used."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    channel = referenced_channel(definition)
    if channel is not None and await find_channel(session, tenant_id, channel) is None:
        problems.append((("body", "channel"), f"no channel {channel!r}"))
    problems += await secret_problems(
        session, tenant_id, secret_references(definition), followup_secret_uses(definition)
    )
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


@dataclass(frozen=True)
class ImportReview:
    """What importing definitions written by another tenant would do here."""

    secret_hosts: dict[str, list[str]]  # secret name → the hosts they would send it to
    reasons: list[list[str]]  # per definition, why it must not run yet (empty: it may)


async def review_import(
    session: AsyncSession,
    tenant_id: str,
    definitions: list[FollowUpDefinition],
    missing: Requirements,
) -> ImportReview:
    """Where the imported follow-ups would send this tenant's secrets, and which must start
    inactive: those that lack a channel or secret (``missing``), and those that would send
    a secret to a host this tenant's secret of that name does not list in its
    ``allowed_hosts`` (a secret without them is allowed nowhere, for an import).

    Raises ``InvalidInput`` for secrets used where secrets may not go, as a save would
    (``body.followups.<index>.<field>``).
    """
    hosts = await secret_hosts(session, tenant_id)
    problems: list[tuple[tuple[str | int, ...], str]] = []
    destinations: dict[str, set[str]] = {}
    reasons: list[list[str]] = []
    for i, definition in enumerate(definitions):
        uses = followup_secret_uses(definition)
        problems += [
            (loc, f"follow-up {definition.name!r}: {message}")
            for loc, message in placement_problems(uses, ("body", "followups", i))
        ]
        for name, found in secret_destinations(uses).items():
            destinations.setdefault(name, set()).update(found)
        needs = requirements([definition])
        lacks = [
            f"needs channel {channel!r}, which this tenant lacks"
            for channel in needs.channels
            if channel in missing.channels
        ]
        lacks += [
            f"needs secret {name!r}, which this tenant lacks"
            for name in needs.secrets
            if name in missing.secrets
        ]
        reasons.append(lacks + unapproved_destinations(uses, hosts))
    if problems:
        raise InvalidInput(problems)
    return ImportReview(
        secret_hosts={name: sorted(found) for name, found in sorted(destinations.items())},
        reasons=reasons,
    )


async def import_followup(
    session: AsyncSession, tenant_id: str, definition: FollowUpDefinition, *, runnable: bool
) -> FollowUp:
    """Create an imported follow-up; one that may not run yet (see ``review_import``) starts
    inactive."""
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
