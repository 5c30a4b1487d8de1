"""Interactions of the inbox: opened by contacts' messages, worked on by agents, measured.

Functions take the session and never commit. Every change that service metrics count is
also an ``InteractionEvent`` (the interaction's history): a stay in a queue begins with
`queued` and finishes with `transferred`, `routed` or `ended`; `assigned`, `replied` and
`first_response` carry the times they measure. ``service_metrics`` reads only events.

A journey's `assign` step moves a contact who writes afterwards (see `_journey_assignment`):
a new interaction opens in the step's queue (or assigned to the step's agent), and one
nobody has taken yet is `routed` there, which counts as a new offer in that queue.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Select,
    SQLColumnExpression,
    and_,
    case,
    delete,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import Label

from nudge.errors import Conflict, InvalidInput, NotFound
from nudge.models.inbox import (
    CHANNEL_ORDER,
    KIND_OF_CHANNEL_TYPE,
    OPEN_STATUSES,
    PRIORITY_RANK,
    ChannelKind,
    ConversationMessage,
    Disposition,
    InteractionEventPublic,
    InteractionPublic,
    MetricsGroupBy,
    NotePublic,
    Priority,
    ServiceMetricsRow,
    Sort,
    Status,
)
from nudge.models.tables import (
    Channel,
    Contact,
    ContactNote,
    Delivery,
    Interaction,
    InteractionCounter,
    InteractionEvent,
    InteractionTag,
    Message,
    utcnow,
)
from nudge.store.agents import (
    InboxAgent,
    ensure_queue,
    find_agent,
    find_queue,
    get_agent,
    queue_agents,
    queue_for_channel,
)
from nudge.store.directory import find_channel
from nudge.store.message_metrics import utc_day
from nudge.store.pagination import PageRequest, keyset_page

WHAT = "interaction"
PREVIEW_CHARS = 200
CONVERSATION_LIMIT = 200
HISTORY_LIMIT = 200
NOTES_SHOWN = 50
# The channel a journey's `assign` step without an integration tells (its notice's
# `source.assignment` says to which queue or agent); see `_journey_assignment`.
INBOX_CHANNEL = "inbox"
# An `assign` step's notice older than this is not acted on by a contact's next message.
JOURNEY_ASSIGNMENT_WINDOW = timedelta(hours=24)
JOURNEY_NOTICES_READ = 5

# `None` as the agent: an admin key, which sees every interaction of the tenant.
Viewer = InboxAgent | None


# Opening, and what a contact's message changes ------------------------------------------------


async def on_incoming_message(
    session: AsyncSession,
    tenant_id: str,
    contact: Contact,
    channel: str,
    text: str,
    at: datetime,
) -> Interaction:
    """The contact's interaction on ``channel`` after their message: the one not ended,
    which the message moves (a `resolved` one is `open` again, unread + 1), or a new one
    in the channel's default queue (`default` without one), or in the queue or with the
    agent a journey's `assign` step named for the contact in the last 24 hours."""
    current = await _current(session, tenant_id, contact.id, channel, lock=True)
    if current is None:
        opened = await _open_for_message(session, tenant_id, contact, channel, text, at)
        if opened is not None:
            return opened
        # Another message of the contact opened it a moment ago: this one joins it.
        current = await _current(session, tenant_id, contact.id, channel, lock=True)
        if current is None:
            raise RuntimeError("the interaction another message opened is not there")
    await _contact_wrote(session, current, text, at)
    return current


async def _current(
    session: AsyncSession, tenant_id: str, contact_id: str, channel: str, *, lock: bool = False
) -> Interaction | None:
    query = select(Interaction).where(
        Interaction.tenant_id == tenant_id,
        Interaction.contact_id == contact_id,
        Interaction.channel == channel,
        Interaction.status != "ended",
    )
    if lock:
        # Messages and agents change the same row: one at a time (SQLite's transactions
        # take turns anyway).
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def _open_for_message(
    session: AsyncSession,
    tenant_id: str,
    contact: Contact,
    channel: str,
    text: str,
    at: datetime,
) -> Interaction | None:
    """A new interaction for the message; None when another message opened one first."""
    kind = await _channel_kind(session, tenant_id, channel)
    queue = await queue_for_channel(session, tenant_id, channel)
    since = await _assignments_since(session, tenant_id, contact.id, channel, at)
    routed = await _journey_assignment(session, tenant_id, contact.id, since)
    assignee = None
    if (
        routed is not None
        and routed[0] == "queue"
        and await find_queue(session, tenant_id, routed[1])
    ):
        queue = routed[1]
    elif (
        routed is not None
        and routed[0] == "agent"
        and await find_agent(session, tenant_id, routed[1])
    ):
        assignee = routed[1]
    await ensure_queue(session, tenant_id, queue)
    interaction = _new_interaction(tenant_id, contact, channel, kind, queue, at)
    interaction.case_number = await next_case_number(session, tenant_id)
    interaction.preview = text[:PREVIEW_CHARS]
    interaction.unread = 1
    interaction.awaiting_since = at
    if not await _inserted(session, interaction):
        return None
    add_event(session, interaction, "queued", at)
    if assignee is not None:
        _assign(session, interaction, assignee, at, detail={"by": "journey"})
    return interaction


def _new_interaction(
    tenant_id: str, contact: Contact, channel: str, kind: ChannelKind, queue: str, at: datetime
) -> Interaction:
    return Interaction(
        tenant_id=tenant_id,
        contact_id=contact.id,
        channel=channel,
        channel_kind=kind,
        # Counting down CHANNEL_ORDER, so that descending order lists chat first.
        channel_rank=len(CHANNEL_ORDER) - 1 - CHANNEL_ORDER.index(kind),
        digital_id=digital_id_of(contact, kind),
        queue=queue,
        status="new",
        priority="normal",
        priority_rank=PRIORITY_RANK["normal"],
        unread=0,
        preview="",
        outbound=False,
        created_at=at,
        received_at=at,
        updated_at=utcnow(),
        queued_at=at,
        replies=0,
    )


async def _inserted(session: AsyncSession, interaction: Interaction) -> bool:
    """Insert in a savepoint; False when the contact has an interaction not ended on that
    channel already (a partial unique index says so, also for two messages at once)."""
    try:
        async with session.begin_nested():
            session.add(interaction)
            await session.flush()
    except IntegrityError:
        return False
    return True


async def next_case_number(session: AsyncSession, tenant_id: str) -> int:
    """The tenant's next case number. The counter row is locked until the caller commits,
    so numbers only grow (a transaction that rolls back leaves a gap)."""
    bump = (
        update(InteractionCounter)
        .where(InteractionCounter.tenant_id == tenant_id)
        .values(last=InteractionCounter.last + 1)
        .returning(InteractionCounter.last)
        .execution_options(synchronize_session=False)
    )
    number = (await session.execute(bump)).scalar_one_or_none()
    if number is None:
        dialect = session.get_bind().dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        first = insert(InteractionCounter).values(tenant_id=tenant_id, last=0)
        await session.execute(first.on_conflict_do_nothing())
        number = (await session.execute(bump)).scalar_one()
    return int(number)


async def _channel_kind(session: AsyncSession, tenant_id: str, channel: str) -> ChannelKind:
    row = await find_channel(session, tenant_id, channel)
    return KIND_OF_CHANNEL_TYPE.get(row.type, "chat") if row is not None else "chat"


def digital_id_of(contact: Contact, kind: ChannelKind) -> str | None:
    """How the channel knows the contact."""
    if kind == "email":
        return contact.email
    if kind == "sms":
        return contact.phone
    if kind == "whatsapp":
        return contact.whatsapp_id or (re.sub(r"\D", "", contact.phone) if contact.phone else None)
    return contact.chat_id or contact.external_id


async def _contact_wrote(
    session: AsyncSession, interaction: Interaction, text: str, at: datetime
) -> None:
    if interaction.status == "resolved":
        interaction.status = "open"
        add_event(session, interaction, "reopened", at)
    interaction.unread += 1  # the row is locked: no other writer in between
    interaction.received_at = max(interaction.received_at, at)
    interaction.preview = text[:PREVIEW_CHARS]
    if interaction.awaiting_since is None:
        interaction.awaiting_since = at
    interaction.updated_at = utcnow()
    if interaction.assignee is None:
        routed = await _journey_assignment(
            session, interaction.tenant_id, interaction.contact_id, interaction.queued_at
        )
        if routed is not None:
            await _follow_journey(session, interaction, routed, at)


# A journey's `assign` step ------------------------------------------------------------------
#
# The step tells the inbox through the tenant's channel `inbox` (or its own integration, which
# Nudge cannot see). Its notice is a delivery of the contact whose `source.assignment` says
# `{"kind": "queue"|"agent", "assignee": …}`; the contact's next message acts on the newest one.


async def _assignments_since(
    session: AsyncSession, tenant_id: str, contact_id: str, channel: str, at: datetime
) -> datetime:
    """Notices count from the end of the contact's previous interaction on the channel (its
    own notice served it), and for 24 hours at most."""
    ended = await session.scalar(
        select(func.max(Interaction.ended_at)).where(
            Interaction.tenant_id == tenant_id,
            Interaction.contact_id == contact_id,
            Interaction.channel == channel,
        )
    )
    since = at - JOURNEY_ASSIGNMENT_WINDOW
    return max(since, ended) if ended is not None else since


async def _journey_assignment(
    session: AsyncSession, tenant_id: str, contact_id: str, since: datetime
) -> tuple[str, str] | None:
    """(kind, assignee) of the newest `assign` notice sent to the contact after ``since``."""
    rows = await session.execute(
        select(Delivery.outbound)
        .where(
            Delivery.tenant_id == tenant_id,
            Delivery.contact_id == contact_id,
            Delivery.channel == INBOX_CHANNEL,
            Delivery.created_at > since,
        )
        .order_by(Delivery.created_at.desc())
        .limit(JOURNEY_NOTICES_READ)
    )
    notices: list[dict[str, Any] | None] = list(rows.scalars())
    for outbound in notices:
        source = (outbound or {}).get("source") or {}
        assignment = source.get("assignment") if isinstance(source, dict) else None
        if isinstance(assignment, dict):
            kind, assignee = assignment.get("kind"), assignment.get("assignee")
            if kind in ("queue", "agent") and isinstance(assignee, str) and assignee:
                return kind, assignee
    return None


async def _follow_journey(
    session: AsyncSession, interaction: Interaction, routed: tuple[str, str], at: datetime
) -> None:
    """Move an unassigned interaction where a journey assigned its contact since its stay
    in the queue began."""
    kind, assignee = routed
    tenant_id = interaction.tenant_id
    if kind == "agent" and await find_agent(session, tenant_id, assignee):
        _assign(session, interaction, assignee, at, detail={"by": "journey"})
    elif (
        kind == "queue"
        and assignee != interaction.queue
        and await find_queue(session, tenant_id, assignee)
    ):
        add_event(session, interaction, "routed", at, detail={"to": assignee, "by": "journey"})
        _start_stay(session, interaction, assignee, at)


# Events -------------------------------------------------------------------------------------


_last_event_ns = 0


def _event_id() -> str:
    """Ids that grow with time (then random), so that events of one moment, as a reply and
    its first response, list in the order they were recorded."""
    global _last_event_ns
    _last_event_ns = max(time.time_ns(), _last_event_ns + 1)
    return f"{_last_event_ns:016x}{secrets.token_hex(8)}"


def add_event(
    session: AsyncSession,
    interaction: Interaction,
    kind: str,
    at: datetime,
    *,
    agent: str | None = None,
    seconds: float | None = None,
    outcome: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Record what happened, in the interaction's queue of the moment."""
    session.add(
        InteractionEvent(
            id=_event_id(),
            tenant_id=interaction.tenant_id,
            interaction_id=interaction.id,
            kind=kind,
            at=at,
            queue=interaction.queue,
            agent=agent,
            seconds=seconds,
            outcome=outcome,
            detail=detail,
        )
    )


def _seconds(since: datetime | None, at: datetime) -> float | None:
    return max((at - since).total_seconds(), 0.0) if since is not None else None


def _assign(
    session: AsyncSession,
    interaction: Interaction,
    agent: str,
    at: datetime,
    *,
    detail: dict[str, Any] | None = None,
    waited: bool = True,
) -> None:
    interaction.assignee = agent
    interaction.assigned_at = at
    interaction.updated_at = utcnow()
    seconds = _seconds(interaction.queued_at, at) if waited else None
    add_event(session, interaction, "assigned", at, agent=agent, seconds=seconds, detail=detail)


def _start_stay(session: AsyncSession, interaction: Interaction, queue: str, at: datetime) -> None:
    """The interaction enters ``queue``: unassigned, nothing answered there yet."""
    interaction.queue = queue
    interaction.queued_at = at
    interaction.assignee = None
    interaction.assigned_at = None
    interaction.first_response_at = None
    interaction.updated_at = utcnow()
    add_event(session, interaction, "queued", at)


# Reading ------------------------------------------------------------------------------------


def _visible(viewer: Viewer) -> ColumnElement[bool]:
    """An agent sees their queues' interactions and those assigned to them."""
    if viewer is None:
        return true()
    return or_(Interaction.queue.in_(viewer.queues), Interaction.assignee == viewer.agent)


async def get_visible(
    session: AsyncSession,
    tenant_id: str,
    interaction_id: str,
    viewer: Viewer,
    *,
    lock: bool = False,
) -> Interaction:
    """The interaction, if the viewer may see it; else ``NotFound`` (as for another
    tenant's)."""
    query = select(Interaction).where(
        Interaction.tenant_id == tenant_id, Interaction.id == interaction_id, _visible(viewer)
    )
    if lock:
        query = query.with_for_update()
    found = (await session.execute(query)).scalar_one_or_none()
    if found is None:
        raise NotFound(WHAT, interaction_id)
    return found


_SORTS: dict[Sort, Any] = {
    "received": Interaction.received_at,
    "priority": Interaction.priority_rank,
    "channel": Interaction.channel_rank,
}


async def interactions_page(
    session: AsyncSession,
    tenant_id: str,
    viewer: Viewer,
    page: PageRequest,
    *,
    queue: str | None = None,
    status: Status | None = None,
    tag: str | None = None,
    assignee: str | None = None,
    sort: Sort = "received",
) -> tuple[list[InteractionPublic], str | None]:
    """The interactions the viewer sees, newest first within the sort (by case number).
    Without ``status``, those not ended; ``assignee`` is an agent or `none`."""
    query = _listed(tenant_id, viewer)
    query = query.where(
        Interaction.status == status if status else Interaction.status.in_(OPEN_STATUSES)
    )
    if queue is not None:
        query = query.where(Interaction.queue == queue)
    if assignee is not None:
        query = query.where(
            Interaction.assignee.is_(None)
            if assignee == "none"
            else Interaction.assignee == assignee
        )
    if tag is not None:
        tagged = select(InteractionTag.interaction_id).where(InteractionTag.tag == tag)
        query = query.where(Interaction.id.in_(tagged))
    rows, next_cursor = await keyset_page(
        session, query, _SORTS[sort], Interaction.case_number, page, descending=True
    )
    tags = await _tags_of(session, [row[0].id for row in rows])
    items = [
        interaction_public(i, external, name, tags.get(i.id, [])) for i, external, name in rows
    ]
    return items, next_cursor


def _listed(tenant_id: str, viewer: Viewer) -> Select[Interaction, str, str | None]:
    return (
        select(Interaction, Contact.external_id, Contact.name)
        .join(Contact, Contact.id == Interaction.contact_id)
        .where(Interaction.tenant_id == tenant_id, _visible(viewer))
    )


async def _tags_of(session: AsyncSession, ids: Sequence[str]) -> dict[str, list[str]]:
    if not ids:
        return {}
    rows = await session.execute(
        select(InteractionTag.interaction_id, InteractionTag.tag)
        .where(InteractionTag.interaction_id.in_(ids))
        .order_by(InteractionTag.tag)
    )
    tags: dict[str, list[str]] = {}
    for interaction_id, tag in rows:
        tags.setdefault(interaction_id, []).append(tag)
    return tags


def interaction_public(
    interaction: Interaction, external_id: str, name: str | None, tags: list[str]
) -> InteractionPublic:
    disposition = interaction.disposition
    return InteractionPublic.model_validate(
        {
            "id": interaction.id,
            "case_number": interaction.case_number,
            "contact_id": external_id,
            "contact_name": name,
            "channel": interaction.channel,
            "channel_kind": interaction.channel_kind,
            "digital_id": interaction.digital_id,
            "queue": interaction.queue,
            "assignee": interaction.assignee,
            "status": interaction.status,
            "priority": interaction.priority,
            "tags": tags,
            "unread": interaction.unread,
            "preview": interaction.preview,
            "outbound": interaction.outbound,
            "created_at": interaction.created_at,
            "received_at": interaction.received_at,
            "updated_at": interaction.updated_at,
            "ended_at": interaction.ended_at,
            "ended_by": interaction.ended_by,
            "disposition": disposition,
        }
    )


async def public_of(session: AsyncSession, interaction: Interaction) -> InteractionPublic:
    """The interaction as the API answers it."""
    contact = await session.get_one(Contact, interaction.contact_id)
    tags = await _tags_of(session, [interaction.id])
    return interaction_public(
        interaction, contact.external_id, contact.name, tags.get(interaction.id, [])
    )


async def conversation(
    session: AsyncSession, interaction: Interaction
) -> tuple[list[ConversationMessage], bool]:
    """The contact's messages on the interaction's channel since it began, until the next
    one began (an answer is in the history once sent, which can be after the end), oldest
    first: the newest ``CONVERSATION_LIMIT``, and whether that is all of them."""
    query = select(Message).where(
        Message.tenant_id == interaction.tenant_id,
        Message.contact_id == interaction.contact_id,
        Message.channel == interaction.channel,
        Message.at >= interaction.created_at,
    )
    following = await session.scalar(
        select(func.min(Interaction.created_at)).where(
            Interaction.tenant_id == interaction.tenant_id,
            Interaction.contact_id == interaction.contact_id,
            Interaction.channel == interaction.channel,
            Interaction.created_at > interaction.created_at,
        )
    )
    if following is not None:
        query = query.where(Message.at < following)
    rows = await session.execute(
        query.order_by(Message.at.desc(), Message.id.desc()).limit(CONVERSATION_LIMIT + 1)
    )
    messages = list(rows.scalars())
    complete = len(messages) <= CONVERSATION_LIMIT
    authors = await _reply_authors(session, interaction.id)
    shown = [_conversation_message(m, authors) for m in reversed(messages[:CONVERSATION_LIMIT])]
    return shown, complete


async def _reply_authors(session: AsyncSession, interaction_id: str) -> dict[str, str]:
    """Which agent wrote each reply, by the notification that sends it."""
    rows = await session.execute(
        select(InteractionEvent.agent, InteractionEvent.detail).where(
            InteractionEvent.interaction_id == interaction_id, InteractionEvent.kind == "replied"
        )
    )
    return {
        str(detail["notification_id"]): str(agent)
        for agent, detail in rows
        if agent and isinstance(detail, dict) and detail.get("notification_id")
    }


def _conversation_message(message: Message, authors: dict[str, str]) -> ConversationMessage:
    source = message.source or {}
    agent = authors.get(str(source.get("notification_id"))) if isinstance(source, dict) else None
    return ConversationMessage.model_validate(
        {
            "id": message.id,
            "direction": message.direction,
            "kind": message.kind,
            "text": message.text,
            "at": message.at,
            "agent": agent,
        }
    )


async def history(session: AsyncSession, interaction: Interaction) -> list[InteractionEventPublic]:
    rows = await session.execute(
        select(InteractionEvent)
        .where(InteractionEvent.interaction_id == interaction.id)
        .order_by(InteractionEvent.at, InteractionEvent.id)
        .limit(HISTORY_LIMIT)
    )
    return [
        InteractionEventPublic.model_validate(event, from_attributes=True)
        for event in rows.scalars()
    ]


# Agents' actions ----------------------------------------------------------------------------


def _case(interaction: Interaction) -> str:
    return f"case #{interaction.case_number}"


def _not_ended(interaction: Interaction) -> None:
    if interaction.status == "ended":
        raise Conflict(f"{_case(interaction)} is ended; the contact's next message opens a new one")


def _not_someone_elses(interaction: Interaction, agent: InboxAgent) -> None:
    if interaction.assignee not in (None, agent.agent):
        raise Conflict(f"{_case(interaction)} is assigned to {interaction.assignee!r}")


async def for_action(
    session: AsyncSession, agent: InboxAgent, interaction_id: str, *, assigned: bool = True
) -> Interaction:
    """The interaction, locked, for an action of ``agent``: not ended, and assigned to them
    (with ``assigned=False``, or to nobody). ``Conflict`` names who has it."""
    interaction = await get_visible(session, agent.tenant_id, interaction_id, agent, lock=True)
    _not_ended(interaction)
    _not_someone_elses(interaction, agent)
    if assigned and interaction.assignee is None:
        raise Conflict(f"{_case(interaction)} is not assigned to you: open it first")
    return interaction


async def claim(
    session: AsyncSession, agent: InboxAgent, interaction_id: str, at: datetime
) -> tuple[Interaction, bool]:
    """Assign the interaction to ``agent`` (opening it): (it, whether it was assigned now).
    One conditional UPDATE decides between two agents at once; the other gets ``Conflict``
    naming the winner. Opening one's own interaction again only marks it read."""
    interaction = await get_visible(session, agent.tenant_id, interaction_id, agent)
    _not_ended(interaction)
    _not_someone_elses(interaction, agent)
    if interaction.assignee == agent.agent:
        interaction.unread = 0
        return interaction, False
    result = await session.execute(
        update(Interaction)
        .where(
            Interaction.id == interaction.id,
            Interaction.assignee.is_(None),
            Interaction.status != "ended",
        )
        .values(assignee=agent.agent, assigned_at=at, unread=0, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    await session.refresh(interaction)
    assert isinstance(result, CursorResult)
    if not result.rowcount:
        _not_ended(interaction)
        _not_someone_elses(interaction, agent)
        return interaction, False  # our own earlier claim, a moment ago
    seconds = _seconds(interaction.queued_at, at)
    add_event(session, interaction, "assigned", at, agent=agent.agent, seconds=seconds)
    return interaction, True


def record_reply(
    session: AsyncSession,
    interaction: Interaction,
    agent: str,
    notification_id: str,
    at: datetime,
) -> None:
    """The agent answered: `resolved` (out of the queue), read, and the times measured."""
    waited = _seconds(interaction.awaiting_since, at)
    detail = {"notification_id": notification_id}
    add_event(session, interaction, "replied", at, agent=agent, seconds=waited, detail=detail)
    if interaction.first_response_at is None:
        interaction.first_response_at = at
        seconds = _seconds(interaction.queued_at, at)
        add_event(session, interaction, "first_response", at, agent=agent, seconds=seconds)
    interaction.status = "resolved"
    interaction.awaiting_since = None
    interaction.unread = 0
    interaction.replies += 1
    interaction.updated_at = utcnow()


def resolve(session: AsyncSession, interaction: Interaction, agent: str, at: datetime) -> None:
    """Out of the queue without an answer (one that needs none)."""
    interaction.unread = 0
    if interaction.status == "resolved":
        return
    interaction.status = "resolved"
    interaction.awaiting_since = None
    interaction.updated_at = utcnow()
    add_event(session, interaction, "resolved", at, agent=agent)


async def transfer(
    session: AsyncSession, interaction: Interaction, agent: str, queue: str, at: datetime
) -> str | None:
    """Move the interaction to ``queue``, unassigned, or assigned to the queue's agent when
    it has exactly one; that agent, if so. ``InvalidInput`` for an unknown queue."""
    if await find_queue(session, interaction.tenant_id, queue) is None:
        raise InvalidInput.at(("body", "queue"), f"no queue {queue!r}")
    handled = _seconds(interaction.assigned_at, at)
    add_event(
        session,
        interaction,
        "transferred",
        at,
        agent=agent,
        seconds=handled,
        outcome="attended",
        detail={"to": queue},
    )
    _start_stay(session, interaction, queue, at)
    members = await queue_agents(session, interaction.tenant_id, queue)
    if len(members) != 1:
        return None
    _assign(session, interaction, members[0], at, detail={"by": "transfer"})
    return members[0]


def end(
    session: AsyncSession,
    interaction: Interaction,
    agent: str,
    disposition: Disposition,
    at: datetime,
) -> None:
    """End it: unassigned, out of the queue; its disposition's notes become a note of the
    agent on the contact. The stay in the queue was attended (answered there), abandoned
    (assigned, never answered) or lost (never assigned)."""
    assignee = interaction.assignee
    if assignee is None:
        outcome = "lost"
    else:
        outcome = "attended" if interaction.first_response_at is not None else "abandoned"
    kept = disposition.model_dump(exclude_none=True)
    add_event(
        session,
        interaction,
        "ended",
        at,
        agent=assignee,
        seconds=_seconds(interaction.assigned_at, at),
        outcome=outcome,
        detail={"by": agent, "disposition": kept},
    )
    interaction.status = "ended"
    interaction.assignee = None
    interaction.awaiting_since = None
    interaction.ended_at = at
    interaction.ended_by = agent
    interaction.disposition = kept
    interaction.updated_at = utcnow()
    if disposition.notes:
        add_note(session, interaction.tenant_id, interaction.contact_id, agent, disposition.notes)


async def set_tags(session: AsyncSession, interaction: Interaction, tags: list[str]) -> None:
    await session.execute(
        delete(InteractionTag).where(InteractionTag.interaction_id == interaction.id)
    )
    session.add_all(InteractionTag(interaction_id=interaction.id, tag=tag) for tag in tags)
    interaction.updated_at = utcnow()
    await session.flush()


def set_priority(interaction: Interaction, priority: Priority) -> None:
    interaction.priority = priority
    interaction.priority_rank = PRIORITY_RANK[priority]
    interaction.updated_at = utcnow()


async def open_outbound(
    session: AsyncSession, agent: InboxAgent, contact: Contact, channel: Channel, at: datetime
) -> Interaction:
    """A new interaction the agent starts on an email or SMS channel, assigned to them (its
    reply is recorded by the caller). It goes to the channel's default queue when the agent
    is in it, else to the first of the agent's queues. ``Conflict`` when the contact has an
    interaction on the channel already, or the agent is in no queue."""
    kind = KIND_OF_CHANNEL_TYPE[channel.type]
    if digital_id_of(contact, kind) is None:
        what = "email address" if kind == "email" else "phone number"
        raise InvalidInput.at(("body", "contact_id"), f"the contact has no {what}")
    current = await _current(session, agent.tenant_id, contact.id, channel.slug)
    if current is not None:
        raise Conflict(
            f"contact {contact.external_id!r} has {_case(current)} on channel"
            f" {channel.slug!r} already; answer there"
        )
    queue = await _outbound_queue(session, agent, channel.slug)
    interaction = _new_interaction(agent.tenant_id, contact, channel.slug, kind, queue, at)
    interaction.case_number = await next_case_number(session, agent.tenant_id)
    interaction.outbound = True
    # Nothing was awaited: no time in queue, no first response to measure.
    interaction.first_response_at = at
    if not await _inserted(session, interaction):
        raise Conflict(f"contact {contact.external_id!r} has an interaction on it already")
    add_event(session, interaction, "outbound", at, agent=agent.agent)
    _assign(session, interaction, agent.agent, at, waited=False)
    return interaction


async def _outbound_queue(session: AsyncSession, agent: InboxAgent, channel: str) -> str:
    queue = await queue_for_channel(session, agent.tenant_id, channel)
    if agent.sees_queue(queue):
        return queue
    if not agent.queues:
        raise Conflict(f"agent {agent.agent!r} is in no queue; an admin adds them to one")
    return min(agent.queues)


async def remove_agent(session: AsyncSession, tenant_id: str, slug: str, at: datetime) -> None:
    """Delete the agent; what they had assigned goes back to its queue, unassigned."""
    agent = await get_agent(session, tenant_id, slug)
    rows = await session.execute(
        select(Interaction)
        .where(
            Interaction.tenant_id == tenant_id,
            Interaction.assignee == slug,
            Interaction.status != "ended",
        )
        .with_for_update()
    )
    for interaction in rows.scalars():
        add_event(session, interaction, "unassigned", at, agent=slug, detail={"why": "deleted"})
        interaction.assignee = None
        interaction.assigned_at = None
        interaction.updated_at = utcnow()
    await session.delete(agent)


# Notes --------------------------------------------------------------------------------------


def add_note(
    session: AsyncSession,
    tenant_id: str,
    contact_id: str,
    agent: str,
    text: str,
    interaction_id: str | None = None,
) -> ContactNote:
    note = ContactNote(
        tenant_id=tenant_id,
        contact_id=contact_id,
        agent=agent,
        text=text,
        interaction_id=interaction_id,
        created_at=utcnow(),
    )
    session.add(note)
    return note


async def note_interaction(
    session: AsyncSession, agent: InboxAgent, contact: Contact, interaction_id: str | None
) -> str | None:
    """The interaction a new note names, if it is the contact's and the agent sees it."""
    if interaction_id is None:
        return None
    try:
        interaction = await get_visible(session, agent.tenant_id, interaction_id, agent)
    except NotFound:
        interaction = None
    if interaction is None or interaction.contact_id != contact.id:
        raise InvalidInput.at(("body", "interaction_id"), "not an interaction of this contact")
    return interaction.id


def note_public(note: ContactNote, external_id: str) -> NotePublic:
    return NotePublic(
        id=note.id,
        contact_id=external_id,
        agent=note.agent,
        text=note.text,
        interaction_id=note.interaction_id,
        created_at=note.created_at,
    )


async def notes_page(
    session: AsyncSession, tenant_id: str, contact: Contact, agent: str, page: PageRequest
) -> tuple[list[NotePublic], str | None]:
    """The agent's own notes on the contact, newest first (nobody else's)."""
    query = select(ContactNote).where(
        ContactNote.tenant_id == tenant_id,
        ContactNote.contact_id == contact.id,
        ContactNote.agent == agent,
    )
    rows, next_cursor = await keyset_page(
        session, query, ContactNote.created_at, ContactNote.id, page, descending=True
    )
    return [note_public(note, contact.external_id) for (note,) in rows], next_cursor


async def notes_of(
    session: AsyncSession, tenant_id: str, contact_id: str, agent: str
) -> list[NotePublic]:
    """The agent's newest notes on the contact, for the interaction's page."""
    contact = await session.get_one(Contact, contact_id)
    notes, _ = await notes_page(session, tenant_id, contact, agent, PageRequest(limit=NOTES_SHOWN))
    return notes


# Service metrics ----------------------------------------------------------------------------


def _count(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _average(condition: ColumnElement[bool]) -> ColumnElement[float | None]:
    return func.avg(case((condition, InteractionEvent.seconds), else_=None))


def _metrics_key(group_by: MetricsGroupBy) -> SQLColumnExpression[Any]:
    keys: dict[MetricsGroupBy, SQLColumnExpression[Any]] = {
        "queue": InteractionEvent.queue,
        "agent": InteractionEvent.agent,
        "day": utc_day(InteractionEvent.at),
    }
    return keys[group_by]


async def service_metrics(
    session: AsyncSession,
    tenant_id: str,
    *,
    start: datetime,
    end: datetime,
    group_by: MetricsGroupBy,
) -> list[ServiceMetricsRow]:
    """The period's figures per queue, agent or UTC day, in one grouped scan of the events
    (see ``ServiceMetricsRow`` for what each counts)."""
    kind = InteractionEvent.kind
    outcome = InteractionEvent.outcome
    key: Label[Any] = _metrics_key(group_by).label("key")
    offered_kind = "assigned" if group_by == "agent" else "queued"
    finished = and_(kind.in_(("ended", "transferred")), InteractionEvent.seconds.is_not(None))
    query = (
        select(
            key,
            _count(kind == offered_kind),
            _count(kind == "ended"),
            _count(outcome == "attended"),
            _count(outcome == "abandoned"),
            _count(outcome == "lost"),
            _count(kind == "transferred"),
            _average(finished),
            _average(kind == "assigned"),
            _average(kind == "first_response"),
            _average(kind == "replied"),
        )
        .where(
            InteractionEvent.tenant_id == tenant_id,
            InteractionEvent.at >= start,
            InteractionEvent.at < end,
        )
        .group_by(key)
    )
    rows = (await session.execute(query)).all()
    items = [_metrics_row(row) for row in rows]
    # Null last, as the message metrics have it (SQLite and PostgreSQL order nulls apart).
    return sorted(items, key=lambda item: (item.key is None, item.key or ""))


def _metrics_row(row: Sequence[Any]) -> ServiceMetricsRow:
    key, offered, closed, attended, abandoned, lost, transferred, *averages = row
    handling, queued, first, response = (
        round(float(value), 3) if value is not None else None for value in averages
    )
    return ServiceMetricsRow(
        key=key,
        offered=int(offered),
        closed=int(closed),
        attended=int(attended),
        abandoned=int(abandoned),
        lost=int(lost),
        transferred=int(transferred),
        average_handling_seconds=handling,
        average_queue_seconds=queued,
        average_first_response_seconds=first,
        average_response_seconds=response,
    )
