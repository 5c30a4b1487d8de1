"""The inbox: interactions and notes (agents), and service metrics (admins).

Agent routes act as the agent the calling key is bound to (`Principal.agent`), only inside
that agent's queues, and only when the agent's access profile has the `inbox` module: any
of these missing is a 403. Admin keys may read interactions (all of the tenant's) but act
as no agent.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Path, Query, status

from nudge.api.deps import AdminDep, AgentDep, PageDep, SessionDep, SettingsDep
from nudge.api.relay import RelayDep
from nudge.api.routes.message_metrics import DateTime
from nudge.errors import InvalidInput
from nudge.models.inbox import (
    AGENT_ID,
    QUEUE_ID,
    EndRequest,
    InteractionCreate,
    InteractionDetail,
    InteractionPublic,
    MetricsGroupBy,
    Module,
    NoteCreate,
    NotePublic,
    PriorityPut,
    ReplyCreate,
    ServiceMetricsList,
    Sort,
    Status,
    TagsPut,
    TransferRequest,
)
from nudge.models.pages import Page
from nudge.models.tables import Interaction, OutboxEntry, utcnow
from nudge.runs import inbox
from nudge.runs.outbox import Relay
from nudge.store import interactions
from nudge.store.agents import InboxAgent, inbox_agent
from nudge.store.directory import get_contact
from nudge.store.tenants import Principal

router = APIRouter(prefix="/v1/interactions", tags=["inbox"])
notes_router = APIRouter(prefix="/v1/contacts", tags=["inbox"])
metrics_router = APIRouter(prefix="/v1/metrics", tags=["metrics"])

InteractionId = Annotated[str, Path(max_length=32)]
ExternalId = Annotated[
    str, Path(min_length=1, max_length=200, description="The contact's id in your systems.")
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]{1,200}$",
        description="Your key for this answer: a retry with the same key sends nothing more.",
    ),
]
DEFAULT_SPAN = timedelta(days=30)
MAX_SPAN = timedelta(days=366)


# Who is calling -----------------------------------------------------------------------------
#
# Profiles and modules: `inbox` is checked on every agent call of these routes. The other
# modules name what the rest of the API offers agents: `journeys` the contact's journeys in
# progress and their stop (`GET /v1/contacts/{id}/journeys`, `POST …/journeys/{id}/stop`,
# served to every role and not checked yet); `followups`, `campaigns`, `metrics` and
# `settings` are admin routes today, which no agent key reaches whatever its profile.


def _forbidden(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_403_FORBIDDEN, detail=detail)


async def acting_agent(principal: Principal, session: SessionDep, module: Module) -> InboxAgent:
    """The agent an agent key acts as, if it exists and its profile has ``module``."""
    if principal.role != "agent":
        raise _forbidden("an admin key acts as no agent; use the agent's own key")
    if principal.agent is None:
        raise _forbidden(
            'this agent key is bound to no agent; create one with POST /v1/api-keys {"role":'
            ' "agent", "agent": "<agent id>"}'
        )
    agent = await inbox_agent(session, principal.tenant_id, principal.tenant_slug, principal.agent)
    if agent is None:
        raise _forbidden(
            f"no agent {principal.agent!r}; an admin creates it: PUT /v1/agents/{{id}}"
        )
    if module not in agent.modules:
        raise _forbidden(f"the access profile of agent {agent.agent!r} does not include {module}")
    return agent


def agent_with(module: Module) -> Callable[..., Coroutine[Any, Any, InboxAgent]]:
    """A dependency: the calling agent, allowed ``module`` (403 otherwise)."""

    async def check(principal: AgentDep, session: SessionDep) -> InboxAgent:
        return await acting_agent(principal, session, module)

    return check


async def _viewer(principal: AgentDep, session: SessionDep) -> InboxAgent | None:
    if principal.role == "admin":
        return None
    return await acting_agent(principal, session, "inbox")


InboxAgentDep = Annotated[InboxAgent, Depends(agent_with("inbox"))]
ViewerDep = Annotated[InboxAgent | None, Depends(_viewer)]


async def _committed(
    session: SessionDep, relay: Relay, interaction: Interaction, entries: list[OutboxEntry]
) -> InteractionPublic:
    """The answer, then the commit, then what Temporal is to be told."""
    answer = await interactions.public_of(session, interaction)
    await session.commit()
    if entries:
        await relay.relay_written(entries)
    return answer


# Interactions -------------------------------------------------------------------------------


@router.get("")
async def read_interactions(
    viewer: ViewerDep,
    principal: AgentDep,
    session: SessionDep,
    page: PageDep,
    queue: Annotated[str | None, Query(pattern=QUEUE_ID, description="Only this queue.")] = None,
    status_filter: Annotated[
        Status | None,
        Query(alias="status", description="Only this status; default every one but `ended`."),
    ] = None,
    tag: Annotated[str | None, Query(min_length=1, max_length=50, description="Tagged so.")] = None,
    assignee: Annotated[
        str | None,
        Query(pattern=AGENT_ID, description="Only those assigned to this agent; `me`, `none`."),
    ] = None,
    sort: Annotated[
        Sort,
        Query(
            description="`received` (newest message first), `priority` (urgent first) or"
            " `channel` (chat, email, facebook, instagram, sms, twitter, whatsapp); then the"
            " newest case first."
        ),
    ] = "received",
) -> Page[InteractionPublic]:
    """The interactions of your queues and those assigned to you (an admin: all of them)."""
    if viewer is not None and queue is not None and not viewer.sees_queue(queue):
        raise _forbidden(f"agent {viewer.agent!r} is not in queue {queue!r}")
    if assignee == "me":
        if viewer is None:
            raise InvalidInput.at(("query", "assignee"), "an admin key is no agent")
        assignee = viewer.agent
    items, next_cursor = await interactions.interactions_page(
        session,
        principal.tenant_id,
        viewer,
        page,
        queue=queue,
        status=status_filter,
        tag=tag,
        assignee=assignee,
        sort=sort,
    )
    return Page[InteractionPublic](items=items, next_cursor=next_cursor)


@router.post("", status_code=status.HTTP_201_CREATED)
async def start_interaction(
    body: InteractionCreate,
    agent: InboxAgentDep,
    session: SessionDep,
    settings: SettingsDep,
    relay: RelayDep,
) -> InteractionPublic:
    """Write to a contact by email or SMS: a new interaction assigned to you, `resolved`."""
    change = await inbox.start_outbound(session, settings, agent, body, utcnow())
    return await _committed(session, relay, change.interaction, change.entries)


@router.get("/{interaction_id}")
async def read_interaction(
    interaction_id: InteractionId, viewer: ViewerDep, principal: AgentDep, session: SessionDep
) -> InteractionDetail:
    """One interaction with its conversation, its history and your notes on the contact."""
    found = await interactions.get_visible(session, principal.tenant_id, interaction_id, viewer)
    public = await interactions.public_of(session, found)
    messages, complete = await interactions.conversation(session, found)
    notes = (
        await interactions.notes_of(session, principal.tenant_id, found.contact_id, viewer.agent)
        if viewer is not None
        else []
    )
    return InteractionDetail(
        **public.model_dump(),
        conversation=messages,
        conversation_complete=complete,
        notes=notes,
        history=await interactions.history(session, found),
    )


@router.post("/{interaction_id}/open")
async def open_interaction(
    interaction_id: InteractionId, agent: InboxAgentDep, session: SessionDep, relay: RelayDep
) -> InteractionPublic:
    """Take the interaction: it is assigned to you (409 naming the agent who has it). The
    contact's journeys hear of a manual assignment."""
    change = await inbox.open_interaction(session, agent, interaction_id, utcnow())
    return await _committed(session, relay, change.interaction, change.entries)


@router.post("/{interaction_id}/reply")
async def reply(
    interaction_id: InteractionId,
    body: ReplyCreate,
    agent: InboxAgentDep,
    session: SessionDep,
    settings: SettingsDep,
    relay: RelayDep,
    idempotency_key: IdempotencyKey = None,
) -> InteractionPublic:
    """Answer the contact on the interaction's channel (open it first): it is sent as
    written and the interaction is `resolved`. The contact's journeys hear of an outgoing
    message."""
    change = await inbox.reply(
        session,
        settings,
        agent,
        interaction_id,
        body.text,
        utcnow(),
        idempotency_key=idempotency_key,
    )
    return await _committed(session, relay, change.interaction, change.entries)


@router.post("/{interaction_id}/resolve")
async def resolve(
    interaction_id: InteractionId, agent: InboxAgentDep, session: SessionDep, relay: RelayDep
) -> InteractionPublic:
    """Mark it `resolved` without an answer (one that needs none)."""
    found = await interactions.for_action(session, agent, interaction_id)
    interactions.resolve(session, found, agent.agent, utcnow())
    return await _committed(session, relay, found, [])


@router.post("/{interaction_id}/transfer")
async def transfer(
    interaction_id: InteractionId,
    body: TransferRequest,
    agent: InboxAgentDep,
    session: SessionDep,
    relay: RelayDep,
) -> InteractionPublic:
    """Move it to another queue: unassigned there, or assigned to the queue's agent when it
    has exactly one."""
    change = await inbox.transfer(session, agent, interaction_id, body.queue, utcnow())
    return await _committed(session, relay, change.interaction, change.entries)


@router.post("/{interaction_id}/end")
async def end(
    interaction_id: InteractionId,
    agent: InboxAgentDep,
    session: SessionDep,
    relay: RelayDep,
    body: Annotated[EndRequest, Body()] = EndRequest(),
) -> InteractionPublic:
    """End it: unassigned and out of the queue; the disposition's notes become your note on
    the contact. The contact's next message opens a new interaction."""
    found = await interactions.for_action(session, agent, interaction_id, assigned=False)
    interactions.end(session, found, agent.agent, body.disposition, utcnow())
    return await _committed(session, relay, found, [])


@router.put("/{interaction_id}/tags")
async def put_tags(
    interaction_id: InteractionId,
    body: TagsPut,
    agent: InboxAgentDep,
    session: SessionDep,
    relay: RelayDep,
) -> InteractionPublic:
    """Replace its tags."""
    found = await interactions.get_visible(
        session, agent.tenant_id, interaction_id, agent, lock=True
    )
    await interactions.set_tags(session, found, body.tags)
    return await _committed(session, relay, found, [])


@router.put("/{interaction_id}/priority")
async def put_priority(
    interaction_id: InteractionId,
    body: PriorityPut,
    agent: InboxAgentDep,
    session: SessionDep,
    relay: RelayDep,
) -> InteractionPublic:
    """Set its priority."""
    found = await interactions.get_visible(
        session, agent.tenant_id, interaction_id, agent, lock=True
    )
    interactions.set_priority(found, body.priority)
    return await _committed(session, relay, found, [])


# Notes --------------------------------------------------------------------------------------


@notes_router.get("/{external_id}/notes")
async def read_notes(
    external_id: ExternalId, agent: InboxAgentDep, session: SessionDep, page: PageDep
) -> Page[NotePublic]:
    """Your notes on the contact, newest first. Nobody else sees them, nor you theirs."""
    contact = await get_contact(session, agent.tenant_id, external_id)
    items, next_cursor = await interactions.notes_page(
        session, agent.tenant_id, contact, agent.agent, page
    )
    return Page[NotePublic](items=items, next_cursor=next_cursor)


@notes_router.post("/{external_id}/notes", status_code=status.HTTP_201_CREATED)
async def add_note(
    external_id: ExternalId, body: NoteCreate, agent: InboxAgentDep, session: SessionDep
) -> NotePublic:
    """Keep a note on the contact, for yourself only."""
    contact = await get_contact(session, agent.tenant_id, external_id)
    about = await interactions.note_interaction(session, agent, contact, body.interaction_id)
    note = interactions.add_note(
        session, agent.tenant_id, contact.id, agent.agent, body.text, interaction_id=about
    )
    await session.flush()
    answer = interactions.note_public(note, contact.external_id)
    await session.commit()
    return answer


# Service metrics ----------------------------------------------------------------------------


@metrics_router.get("/service")
async def read_service_metrics(
    principal: AdminDep,
    session: SessionDep,
    start: Annotated[
        DateTime | None,
        Query(
            alias="from",
            description="The period's start, included, with its offset; default 30 days"
            " before `to`.",
        ),
    ] = None,
    end: Annotated[
        DateTime | None, Query(alias="to", description="The period's end, excluded; default now.")
    ] = None,
    group_by: Annotated[
        MetricsGroupBy, Query(description="`queue`, `agent` or `day` (UTC).")
    ] = "queue",
) -> ServiceMetricsList:
    """How the inbox served contacts in the period: offered, closed, attended, abandoned and
    lost interactions, transfers, and average handling, queue, first-response and response
    times in seconds. `from` must be before `to`, at most 366 days apart."""
    since, until = _period(start, end)
    items = await interactions.service_metrics(
        session, principal.tenant_id, start=since, end=until, group_by=group_by
    )
    return ServiceMetricsList(group_by=group_by, start=since, end=until, items=items)


def _period(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    try:
        until = end.astimezone(UTC) if end is not None else utcnow()
        since = start.astimezone(UTC) if start is not None else until - DEFAULT_SPAN
    except OverflowError:
        raise InvalidInput.at(("query", "from"), "out of range once in UTC") from None
    if since >= until:
        raise InvalidInput.at(("query", "from"), "must be before `to`")
    if until - since > MAX_SPAN:
        raise InvalidInput.at(("query", "from"), f"at most {MAX_SPAN.days} days before `to`")
    return since, until
