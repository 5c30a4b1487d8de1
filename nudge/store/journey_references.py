"""What a journey definition refers to that only the database knows: other journeys, channels
and secrets. Functions take the session and never commit."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.errors import InvalidInput
from nudge.models.channels import LAST_USED
from nudge.models.followups import template_secrets
from nudge.models.integrations import Integration
from nudge.models.journeys import (
    AskStep,
    AssignStep,
    HttpRequestStep,
    JourneyDefinition,
    SendMessageStep,
    SurveyStep,
    TriggerJourneyStep,
)
from nudge.models.secret_hosts import journey_secret_uses
from nudge.models.tables import Journey, JourneyVersion
from nudge.models.validation import Loc
from nudge.store.directory import find_channel, secret_problems
from nudge.store.journeys import journey_definition_at


def _integration_templates(integration: Integration) -> Iterator[str]:
    yield integration.url
    yield from integration.headers.values()
    yield from integration.query.values()
    if integration.body is not None:
        yield integration.body


def _secret_references(definition: JourneyDefinition) -> Iterator[tuple[Loc, str]]:
    """(path, secret name) of every secret an integration of ``definition`` reads."""
    for i, step in enumerate(definition.steps):
        if isinstance(step, HttpRequestStep | AssignStep) and step.integration is not None:
            for source in _integration_templates(step.integration):
                for name in template_secrets(source):
                    yield ("body", "steps", i, "integration"), name


async def check_journey_references(
    session: AsyncSession,
    tenant_id: str,
    definition: JourneyDefinition,
    *,
    journey_id: str | None = None,
    require_published: bool = True,
) -> None:
    """Unknown or unpublished target journeys, unknown start steps, channels and secrets,
    secrets used where secrets may not go or sent to a host their ``allowed_hosts`` leave
    out are refused with the path of the field (``journey_id``: the journey being saved, which
    must not trigger itself; ``require_published=False`` lets a set of journeys that trigger
    each other be created before any is published).

    Raises ``InvalidInput``.
    """
    problems: list[tuple[Loc, str]] = []
    for i, step in enumerate(definition.steps):
        if isinstance(step, TriggerJourneyStep):
            problems += await _target_problems(
                session, tenant_id, i, step, journey_id, require_published
            )
        elif (
            isinstance(step, SendMessageStep | AskStep | SurveyStep)
            and step.channel != LAST_USED
            and await find_channel(session, tenant_id, step.channel) is None
        ):
            problems.append((("body", "steps", i, "channel"), f"no channel {step.channel!r}"))
    problems += await secret_problems(
        session, tenant_id, _secret_references(definition), journey_secret_uses(definition)
    )
    if problems:
        raise InvalidInput(problems)


async def _target_problems(
    session: AsyncSession,
    tenant_id: str,
    index: int,
    step: TriggerJourneyStep,
    journey_id: str | None,
    require_published: bool,
) -> list[tuple[Loc, str]]:
    loc: Loc = ("body", "steps", index)
    if step.journey_id == journey_id:
        return [((*loc, "journey_id"), "a journey cannot trigger itself; use `jump_to`")]
    target = (
        await session.execute(
            select(Journey).where(Journey.tenant_id == tenant_id, Journey.id == step.journey_id)
        )
    ).scalar_one_or_none()
    if target is None:
        return [((*loc, "journey_id"), f"no journey {step.journey_id!r}")]
    if require_published and target.status != "published":
        message = f"journey {target.name!r} is {target.status}; publish it first"
        return [((*loc, "journey_id"), message)]
    if step.start_at is not None:
        row = await session.get_one(JourneyVersion, (target.id, target.version))
        steps = {s.get("id") for s in row.definition.get("steps", [])}
        if step.start_at not in steps:
            return [((*loc, "start_at"), f"journey {target.name!r} has no step {step.start_at!r}")]
    return []


async def unpublished_handover(
    session: AsyncSession, journey: Journey, definition: JourneyDefinition
) -> str | None:
    """Why an entry journey cannot be published yet: a journey it hands contacts over to,
    directly or through others, is not published (that hand-over would fail at run time).

    Journeys with a `manual` trigger are not checked: nobody reaches them before the
    journeys that hand over to them are published, so a menu's parts go first.
    """
    seen, todo = {journey.id}, [(journey.name, definition)]
    while todo:
        source, steps = todo.pop()
        for step in steps.steps:
            if not isinstance(step, TriggerJourneyStep) or step.journey_id in seen:
                continue
            seen.add(step.journey_id)
            target = await session.get(Journey, step.journey_id)
            if target is None or target.tenant_id != journey.tenant_id:
                return f"step {step.id!r} of {source!r} hands over to a journey that is gone"
            if target.status != "published":
                return (
                    f"step {step.id!r} of {source!r} hands contacts over to journey"
                    f" {target.name!r}, which is {target.status}; publish it first"
                )
            todo.append(
                (target.name, await journey_definition_at(session, target.id, target.version))
            )
    return None


async def published_referrer(session: AsyncSession, journey: Journey) -> tuple[str, str] | None:
    """(name, step id) of a published journey whose current version hands over to ``journey``."""
    rows = await session.execute(
        select(Journey.name, JourneyVersion.definition)
        .join(
            JourneyVersion,
            (JourneyVersion.journey_id == Journey.id) & (JourneyVersion.version == Journey.version),
        )
        .where(Journey.tenant_id == journey.tenant_id, Journey.status == "published")
    )
    for row in rows:
        name, definition = str(row[0]), row[1]
        for step in definition.get("steps", []):
            if step.get("type") == "trigger_journey" and step.get("journey_id") == journey.id:
                return name, str(step.get("id"))
    return None
