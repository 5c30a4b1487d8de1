"""Agents, queues and access profiles of the inbox (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from nudge.api.deps import AdminDep, PageDep, SessionDep
from nudge.models.inbox import (
    AGENT_ID,
    PROFILE_ID,
    QUEUE_ID,
    AccessProfilePublic,
    AccessProfilePut,
    AgentPublic,
    AgentPut,
    QueuePublic,
    QueuePut,
)
from nudge.models.pages import Page
from nudge.models.tables import utcnow
from nudge.store.agents import (
    agent_public,
    agents_page,
    delete_profile,
    delete_queue,
    get_agent,
    get_profile,
    get_queue,
    profile_public,
    profiles_page,
    put_agent,
    put_profile,
    put_queue,
    queue_public,
    queues_page,
)
from nudge.store.interactions import remove_agent

router = APIRouter(prefix="/v1/agents", tags=["inbox admin"])
queue_router = APIRouter(prefix="/v1/queues", tags=["inbox admin"])
profile_router = APIRouter(prefix="/v1/access-profiles", tags=["inbox admin"])

AgentId = Annotated[
    str, Path(pattern=AGENT_ID, description="Your id for the agent: the `agent` of their keys.")
]
QueueId = Annotated[str, Path(pattern=QUEUE_ID, description="Your id for the queue.")]
ProfileId = Annotated[str, Path(pattern=PROFILE_ID, description="Your id for the profile.")]


def _no_content() -> Response:
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# Agents -------------------------------------------------------------------------------------


@router.put("/{agent_id}")
async def upsert_agent(
    agent_id: AgentId, body: AgentPut, principal: AdminDep, session: SessionDep
) -> AgentPublic:
    """Create or replace an agent: their queues and access profile. Agent keys
    (`POST /v1/api-keys {"role": "agent", "agent": "<id>"}`) act as this agent."""
    agent = await put_agent(session, principal.tenant_id, agent_id, body)
    answer = await agent_public(session, agent)
    await session.commit()
    return answer


@router.get("")
async def read_agents(principal: AdminDep, session: SessionDep, page: PageDep) -> Page[AgentPublic]:
    """The tenant's agents, by id."""
    agents, next_cursor = await agents_page(session, principal.tenant_id, page)
    return Page[AgentPublic](
        items=[await agent_public(session, agent) for agent in agents], next_cursor=next_cursor
    )


@router.get("/{agent_id}")
async def read_agent(agent_id: AgentId, principal: AdminDep, session: SessionDep) -> AgentPublic:
    """One agent."""
    return await agent_public(session, await get_agent(session, principal.tenant_id, agent_id))


@router.delete("/{agent_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove(agent_id: AgentId, principal: AdminDep, session: SessionDep) -> Response:
    """Delete an agent: what they had assigned goes back to its queue, and their keys can no
    longer use the inbox (revoke them with `DELETE /v1/api-keys/{id}`)."""
    await remove_agent(session, principal.tenant_id, agent_id, utcnow())
    await session.commit()
    return _no_content()


# Queues -------------------------------------------------------------------------------------


@queue_router.put("/{queue_id}")
async def upsert_queue(
    queue_id: QueueId, body: QueuePut, principal: AdminDep, session: SessionDep
) -> QueuePublic:
    """Create or replace a queue, and the channels it is the default queue of (409 when
    another queue is the default of one of them)."""
    queue = await put_queue(session, principal.tenant_id, queue_id, body)
    answer = await queue_public(session, queue)
    await session.commit()
    return answer


@queue_router.get("")
async def read_queues(principal: AdminDep, session: SessionDep, page: PageDep) -> Page[QueuePublic]:
    """The tenant's queues, by id (`default` appears once a message needed it)."""
    queues, next_cursor = await queues_page(session, principal.tenant_id, page)
    return Page[QueuePublic](
        items=[await queue_public(session, queue) for queue in queues], next_cursor=next_cursor
    )


@queue_router.get("/{queue_id}")
async def read_queue(queue_id: QueueId, principal: AdminDep, session: SessionDep) -> QueuePublic:
    """One queue, with its agents."""
    return await queue_public(session, await get_queue(session, principal.tenant_id, queue_id))


@queue_router.delete("/{queue_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_queue(queue_id: QueueId, principal: AdminDep, session: SessionDep) -> Response:
    """Delete a queue (409 while interactions that are not ended are in it)."""
    await delete_queue(session, principal.tenant_id, queue_id)
    await session.commit()
    return _no_content()


# Access profiles ----------------------------------------------------------------------------


@profile_router.put("/{profile_id}")
async def upsert_profile(
    profile_id: ProfileId, body: AccessProfilePut, principal: AdminDep, session: SessionDep
) -> AccessProfilePublic:
    """Create or replace an access profile: the modules its agents may use."""
    profile = await put_profile(session, principal.tenant_id, profile_id, body)
    answer = profile_public(profile)
    await session.commit()
    return answer


@profile_router.get("")
async def read_profiles(
    principal: AdminDep, session: SessionDep, page: PageDep
) -> Page[AccessProfilePublic]:
    """The tenant's access profiles, by id."""
    profiles, next_cursor = await profiles_page(session, principal.tenant_id, page)
    return Page[AccessProfilePublic](
        items=[profile_public(profile) for profile in profiles], next_cursor=next_cursor
    )


@profile_router.get("/{profile_id}")
async def read_profile(
    profile_id: ProfileId, principal: AdminDep, session: SessionDep
) -> AccessProfilePublic:
    """One access profile."""
    return profile_public(await get_profile(session, principal.tenant_id, profile_id))


@profile_router.delete("/{profile_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_profile(
    profile_id: ProfileId, principal: AdminDep, session: SessionDep
) -> Response:
    """Delete an access profile (409 naming the agents that still have it)."""
    await delete_profile(session, principal.tenant_id, profile_id)
    await session.commit()
    return _no_content()
