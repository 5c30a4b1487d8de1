"""Agents, queues and access profiles of one tenant, and who an agent key acts as.
Functions take the session and never commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.errors import Conflict, InvalidInput, NotFound
from nudge.models.inbox import (
    DEFAULT_QUEUE,
    MODULES,
    OPEN_STATUSES,
    AccessProfilePublic,
    AccessProfilePut,
    AgentPublic,
    AgentPut,
    Module,
    QueuePublic,
    QueuePut,
)
from nudge.models.tables import (
    AccessProfile,
    Agent,
    AgentQueue,
    Channel,
    Interaction,
    Queue,
    QueueChannel,
    utcnow,
)
from nudge.store.pagination import PageRequest, keyset_page

# How many names a refusal lists before it says "and N more".
NAMES_SHOWN = 10


@dataclass(frozen=True)
class InboxAgent:
    """An agent as the inbox sees the caller: who, in which queues, allowed which modules."""

    tenant_id: str
    tenant_slug: str
    agent: str
    name: str
    queues: frozenset[str]
    modules: frozenset[str]

    def sees_queue(self, queue: str) -> bool:
        return queue in self.queues


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(repr(name) for name in names[:NAMES_SHOWN])
    more = len(names) - NAMES_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


# Access profiles ----------------------------------------------------------------------------


async def find_profile(session: AsyncSession, tenant_id: str, slug: str) -> AccessProfile | None:
    rows = await session.execute(
        select(AccessProfile).where(
            AccessProfile.tenant_id == tenant_id, AccessProfile.slug == slug
        )
    )
    return rows.scalar_one_or_none()


async def get_profile(session: AsyncSession, tenant_id: str, slug: str) -> AccessProfile:
    profile = await find_profile(session, tenant_id, slug)
    if profile is None:
        raise NotFound("access profile", slug)
    return profile


async def put_profile(
    session: AsyncSession, tenant_id: str, slug: str, body: AccessProfilePut
) -> AccessProfile:
    """Create or replace the profile; its agents have the new modules from now on."""
    profile = await find_profile(session, tenant_id, slug)
    if profile is None:
        profile = AccessProfile(tenant_id=tenant_id, slug=slug)
        session.add(profile)
    profile.name, profile.description = body.name, body.description
    # In the product's order, whatever the order given: the same profile reads the same.
    profile.modules = [module for module in MODULES if module in body.modules]
    profile.updated_at = utcnow()
    await session.flush()
    return profile


def profile_public(profile: AccessProfile) -> AccessProfilePublic:
    return AccessProfilePublic.model_validate(
        {
            "id": profile.slug,
            "name": profile.name,
            "description": profile.description,
            "modules": profile.modules,
            "updated_at": profile.updated_at,
        }
    )


async def profiles_page(
    session: AsyncSession, tenant_id: str, page: PageRequest
) -> tuple[list[AccessProfile], str | None]:
    query = select(AccessProfile).where(AccessProfile.tenant_id == tenant_id)
    rows, next_cursor = await keyset_page(
        session, query, AccessProfile.slug, AccessProfile.id, page
    )
    return [profile for (profile,) in rows], next_cursor


async def delete_profile(session: AsyncSession, tenant_id: str, slug: str) -> None:
    """Delete the profile; ``Conflict`` naming the agents that still have it."""
    profile = await get_profile(session, tenant_id, slug)
    users = await session.execute(
        select(Agent.slug).where(Agent.profile_id == profile.id).order_by(Agent.slug)
    )
    names = list(users.scalars())
    if names:
        raise Conflict(
            f"access profile {slug!r} is the profile of agents {_names(names)}; give them"
            " another one first"
        )
    await session.delete(profile)


# Queues -------------------------------------------------------------------------------------


async def find_queue(session: AsyncSession, tenant_id: str, slug: str) -> Queue | None:
    rows = await session.execute(
        select(Queue).where(Queue.tenant_id == tenant_id, Queue.slug == slug)
    )
    return rows.scalar_one_or_none()


async def get_queue(session: AsyncSession, tenant_id: str, slug: str) -> Queue:
    queue = await find_queue(session, tenant_id, slug)
    if queue is None:
        raise NotFound("queue", slug)
    return queue


async def put_queue(session: AsyncSession, tenant_id: str, slug: str, body: QueuePut) -> Queue:
    """Create or replace the queue and the channels it is the default queue of. Raises
    ``InvalidInput`` for an unknown channel and ``Conflict`` for one another queue has."""
    await _check_channels(session, tenant_id, body.default_for_channels)
    queue = await find_queue(session, tenant_id, slug)
    if queue is None:
        queue = Queue(tenant_id=tenant_id, slug=slug)
        session.add(queue)
    queue.name = body.name
    queue.updated_at = utcnow()
    await session.flush()
    await _check_channels_free(session, tenant_id, queue, body.default_for_channels)
    await session.execute(delete(QueueChannel).where(QueueChannel.queue_id == queue.id))
    session.add_all(
        QueueChannel(tenant_id=tenant_id, channel=channel, queue_id=queue.id)
        for channel in body.default_for_channels
    )
    await session.flush()
    return queue


async def _check_channels(session: AsyncSession, tenant_id: str, channels: list[str]) -> None:
    rows = await session.execute(
        select(Channel.slug).where(Channel.tenant_id == tenant_id, Channel.slug.in_(channels))
    )
    known = set(rows.scalars())
    problems = [
        (("body", "default_for_channels", i), f"no channel {channel!r}")
        for i, channel in enumerate(channels)
        if channel not in known
    ]
    if problems:
        raise InvalidInput(problems)


async def _check_channels_free(
    session: AsyncSession, tenant_id: str, queue: Queue, channels: list[str]
) -> None:
    rows = await session.execute(
        select(QueueChannel.channel, Queue.slug)
        .join(Queue, Queue.id == QueueChannel.queue_id)
        .where(
            QueueChannel.tenant_id == tenant_id,
            QueueChannel.channel.in_(channels),
            QueueChannel.queue_id != queue.id,
        )
        .order_by(QueueChannel.channel)
    )
    taken = rows.all()
    if taken:
        channel, other = taken[0]
        raise Conflict(
            f"queue {other!r} is the default queue of channel {channel!r}; take it out there first"
        )


async def ensure_queue(session: AsyncSession, tenant_id: str, slug: str) -> None:
    """Make sure the queue exists (the `default` queue comes into being when first needed),
    in a savepoint: a message opening it at the same moment is no error."""
    if await find_queue(session, tenant_id, slug) is not None:
        return
    try:
        async with session.begin_nested():
            session.add(Queue(tenant_id=tenant_id, slug=slug, name=slug.capitalize()))
            await session.flush()
    except IntegrityError:
        pass


async def queue_for_channel(session: AsyncSession, tenant_id: str, channel: str) -> str:
    """The channel's default queue, else `default`."""
    rows = await session.execute(
        select(Queue.slug)
        .join(QueueChannel, QueueChannel.queue_id == Queue.id)
        .where(QueueChannel.tenant_id == tenant_id, QueueChannel.channel == channel)
    )
    return rows.scalar_one_or_none() or DEFAULT_QUEUE


async def queue_agents(session: AsyncSession, tenant_id: str, slug: str) -> list[str]:
    """The ids of the agents in the queue, in order."""
    rows = await session.execute(
        select(Agent.slug)
        .join(AgentQueue, AgentQueue.agent_id == Agent.id)
        .join(Queue, Queue.id == AgentQueue.queue_id)
        .where(Queue.tenant_id == tenant_id, Queue.slug == slug)
        .order_by(Agent.slug)
    )
    return list(rows.scalars())


async def queue_public(session: AsyncSession, queue: Queue) -> QueuePublic:
    channels = await session.execute(
        select(QueueChannel.channel)
        .where(QueueChannel.queue_id == queue.id)
        .order_by(QueueChannel.channel)
    )
    return QueuePublic(
        id=queue.slug,
        name=queue.name,
        default_for_channels=list(channels.scalars()),
        agents=await queue_agents(session, queue.tenant_id, queue.slug),
        updated_at=queue.updated_at,
    )


async def queues_page(
    session: AsyncSession, tenant_id: str, page: PageRequest
) -> tuple[list[Queue], str | None]:
    query = select(Queue).where(Queue.tenant_id == tenant_id)
    rows, next_cursor = await keyset_page(session, query, Queue.slug, Queue.id, page)
    return [queue for (queue,) in rows], next_cursor


async def delete_queue(session: AsyncSession, tenant_id: str, slug: str) -> None:
    """Delete the queue; ``Conflict`` while interactions that are not ended wait in it."""
    queue = await get_queue(session, tenant_id, slug)
    waiting = await session.scalar(
        select(func.count())
        .select_from(Interaction)
        .where(
            Interaction.tenant_id == tenant_id,
            Interaction.queue == slug,
            Interaction.status.in_(OPEN_STATUSES),
        )
    )
    if waiting:
        raise Conflict(
            f"queue {slug!r} has {waiting} interaction(s) that are not ended; transfer or end"
            " them first"
        )
    await session.delete(queue)


# Agents -------------------------------------------------------------------------------------


async def find_agent(session: AsyncSession, tenant_id: str, slug: str) -> Agent | None:
    rows = await session.execute(
        select(Agent).where(Agent.tenant_id == tenant_id, Agent.slug == slug)
    )
    return rows.scalar_one_or_none()


async def get_agent(session: AsyncSession, tenant_id: str, slug: str) -> Agent:
    agent = await find_agent(session, tenant_id, slug)
    if agent is None:
        raise NotFound("agent", slug)
    return agent


async def put_agent(session: AsyncSession, tenant_id: str, slug: str, body: AgentPut) -> Agent:
    """Create or replace the agent, their queues and profile; ``InvalidInput`` for a queue
    or profile that does not exist."""
    queues = await _queues_named(session, tenant_id, body.queues)
    profile = None
    if body.profile is not None:
        profile = await find_profile(session, tenant_id, body.profile)
        if profile is None:
            raise InvalidInput.at(("body", "profile"), f"no access profile {body.profile!r}")
    agent = await find_agent(session, tenant_id, slug)
    if agent is None:
        agent = Agent(tenant_id=tenant_id, slug=slug)
        session.add(agent)
    agent.name, agent.email = body.name, body.email
    agent.profile_id = profile.id if profile is not None else None
    agent.updated_at = utcnow()
    await session.flush()
    await session.execute(delete(AgentQueue).where(AgentQueue.agent_id == agent.id))
    session.add_all(AgentQueue(agent_id=agent.id, queue_id=queue.id) for queue in queues)
    await session.flush()
    return agent


async def _queues_named(session: AsyncSession, tenant_id: str, slugs: list[str]) -> list[Queue]:
    rows = await session.execute(
        select(Queue).where(Queue.tenant_id == tenant_id, Queue.slug.in_(slugs))
    )
    found = {queue.slug: queue for queue in rows.scalars()}
    problems = [
        (("body", "queues", i), f"no queue {slug!r}")
        for i, slug in enumerate(slugs)
        if slug not in found
    ]
    if problems:
        raise InvalidInput(problems)
    return [found[slug] for slug in slugs]


async def agent_queues(session: AsyncSession, agent: Agent) -> list[str]:
    rows = await session.execute(
        select(Queue.slug)
        .join(AgentQueue, AgentQueue.queue_id == Queue.id)
        .where(AgentQueue.agent_id == agent.id)
        .order_by(Queue.slug)
    )
    return list(rows.scalars())


async def agent_modules(session: AsyncSession, agent: Agent) -> frozenset[Module]:
    """What the agent may use: their profile's modules, every module without a profile."""
    if agent.profile_id is None:
        return frozenset(MODULES)
    profile = await session.get_one(AccessProfile, agent.profile_id)
    return frozenset(module for module in MODULES if module in profile.modules)


async def agent_public(session: AsyncSession, agent: Agent) -> AgentPublic:
    profile = (
        await session.get_one(AccessProfile, agent.profile_id)
        if agent.profile_id is not None
        else None
    )
    return AgentPublic(
        id=agent.slug,
        name=agent.name,
        email=agent.email,
        queues=await agent_queues(session, agent),
        profile=profile.slug if profile is not None else None,
        updated_at=agent.updated_at,
    )


async def agents_page(
    session: AsyncSession, tenant_id: str, page: PageRequest
) -> tuple[list[Agent], str | None]:
    query = select(Agent).where(Agent.tenant_id == tenant_id)
    rows, next_cursor = await keyset_page(session, query, Agent.slug, Agent.id, page)
    return [agent for (agent,) in rows], next_cursor


async def inbox_agent(
    session: AsyncSession, tenant_id: str, tenant_slug: str, slug: str
) -> InboxAgent | None:
    """The agent an agent key is bound to, as the inbox needs them; None when no such
    agent exists (never created, or deleted since)."""
    agent = await find_agent(session, tenant_id, slug)
    if agent is None:
        return None
    return InboxAgent(
        tenant_id=tenant_id,
        tenant_slug=tenant_slug,
        agent=agent.slug,
        name=agent.name,
        queues=frozenset(await agent_queues(session, agent)),
        modules=await agent_modules(session, agent),
    )
