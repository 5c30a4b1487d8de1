"""The service history: interactions a period received, and one interaction's transcript.

The history lists interactions by when they came in (`created_at`: the contact's first
message, or when an agent started one), which never changes, so a cursor stays put while
contacts keep writing. Functions take the session and never commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.errors import NotFound
from nudge.models.inbox import ChannelKind, Disposition, Status
from nudge.models.tables import Contact, Interaction, InteractionEvent, Message
from nudge.store.agents import InboxAgent
from nudge.store.interactions import WHAT
from nudge.store.pagination import PageRequest, keyset_page

# A transcript is a file someone reads: past this it says it was cut.
TRANSCRIPT_LIMIT = 5_000
# Events that name an agent who worked on the interaction (who may have its transcript).
HANDLING_KINDS = ("assigned", "replied", "resolved", "transferred", "outbound", "ended")


class HistoryItem(BaseModel):
    id: str
    case_number: int
    contact_id: str = Field(description="The contact's external id.")
    contact_name: str | None
    channel: str = Field(description="The sender channel it came in on.")
    channel_kind: ChannelKind
    queue: str
    agent: str | None = Field(
        description="The agent who has it; once nobody has it (ended, transferred), the last"
        " one who had it; null when no agent ever did."
    )
    status: Status
    received_at: datetime = Field(
        description="When it came in: the contact's first message (or when an agent started it)."
    )
    ended_at: datetime | None
    ended_by: str | None
    disposition: Disposition | None


async def history_page(
    session: AsyncSession,
    tenant_id: str,
    page: PageRequest,
    *,
    start: datetime,
    end: datetime,
    channel: str | None = None,
) -> tuple[list[HistoryItem], str | None]:
    """The tenant's interactions that came in within [start, end), on ``channel`` if given,
    newest first (then by case number)."""
    query = (
        select(Interaction, Contact.external_id, Contact.name)
        .join(Contact, Contact.id == Interaction.contact_id)
        .where(
            Interaction.tenant_id == tenant_id,
            Interaction.created_at >= start,
            Interaction.created_at < end,
        )
    )
    if channel is not None:
        query = query.where(Interaction.channel == channel)
    rows, next_cursor = await keyset_page(
        session, query, Interaction.created_at, Interaction.case_number, page, descending=True
    )
    last = await _last_agents(session, [row[0].id for row in rows])
    items = [_item(i, external, name, last.get(i.id)) for i, external, name in rows]
    return items, next_cursor


async def _last_agents(session: AsyncSession, ids: Sequence[str]) -> dict[str, str]:
    """The newest agent assigned to each interaction (one query for the page)."""
    if not ids:
        return {}
    rows = await session.execute(
        select(InteractionEvent.interaction_id, InteractionEvent.agent)
        .where(
            InteractionEvent.interaction_id.in_(ids),
            InteractionEvent.kind == "assigned",
            InteractionEvent.agent.is_not(None),
        )
        .order_by(InteractionEvent.at, InteractionEvent.id)
    )
    # Later rows overwrite earlier ones: the newest assignment wins.
    return {interaction_id: agent for interaction_id, agent in rows if agent is not None}


def _item(
    interaction: Interaction, external_id: str, name: str | None, last_agent: str | None
) -> HistoryItem:
    return HistoryItem.model_validate(
        {
            "id": interaction.id,
            "case_number": interaction.case_number,
            "contact_id": external_id,
            "contact_name": name,
            "channel": interaction.channel,
            "channel_kind": interaction.channel_kind,
            "queue": interaction.queue,
            "agent": interaction.assignee or last_agent,
            "status": interaction.status,
            "received_at": interaction.created_at,
            "ended_at": interaction.ended_at,
            "ended_by": interaction.ended_by,
            "disposition": interaction.disposition,
        }
    )


# Transcripts --------------------------------------------------------------------------------


@dataclass
class TranscriptLine:
    at: datetime
    direction: str
    who: str
    text: str
    links: list[str] = field(default_factory=list)


@dataclass
class Transcript:
    item: HistoryItem
    lines: list[TranscriptLine]
    complete: bool


async def get_interaction(
    session: AsyncSession, tenant_id: str, interaction_id: str
) -> Interaction:
    """The tenant's interaction; ``NotFound`` as for another tenant's."""
    found = await session.scalar(
        select(Interaction).where(
            Interaction.tenant_id == tenant_id, Interaction.id == interaction_id
        )
    )
    if found is None:
        raise NotFound(WHAT, interaction_id)
    return found


async def handled_by(session: AsyncSession, interaction: Interaction, agent: InboxAgent) -> bool:
    """Whether ``agent`` has or had the interaction: assigned, answered, moved or ended it."""
    if agent.agent in (interaction.assignee, interaction.ended_by):
        return True
    found = await session.scalar(
        select(func.count())
        .select_from(InteractionEvent)
        .where(
            InteractionEvent.interaction_id == interaction.id,
            InteractionEvent.agent == agent.agent,
            InteractionEvent.kind.in_(HANDLING_KINDS),
        )
    )
    return bool(found)


async def transcript(session: AsyncSession, interaction: Interaction) -> Transcript:
    """The interaction's messages, oldest first, with who wrote each: the contact, the
    agent who answered (by the notification each reply sent), or Nudge (journeys,
    notifications). The same span as the inbox's conversation: from its start until the
    contact's next interaction on the channel began."""
    contact = await session.get_one(Contact, interaction.contact_id)
    query = select(Message).where(
        Message.tenant_id == interaction.tenant_id,
        Message.contact_id == interaction.contact_id,
        Message.channel == interaction.channel,
        Message.at >= interaction.created_at,
    )
    following = await _next_start(session, interaction)
    if following is not None:
        query = query.where(Message.at < following)
    rows = await session.execute(query.order_by(Message.at, Message.id).limit(TRANSCRIPT_LIMIT + 1))
    messages = list(rows.scalars())
    authors = await _reply_authors(session, interaction.id)
    contact_label = contact.name or contact.external_id
    lines = [_line(m, contact_label, authors) for m in messages[:TRANSCRIPT_LIMIT]]
    last = await _last_agents(session, [interaction.id])
    item = _item(interaction, contact.external_id, contact.name, last.get(interaction.id))
    return Transcript(item, lines, complete=len(messages) <= TRANSCRIPT_LIMIT)


async def _next_start(session: AsyncSession, interaction: Interaction) -> datetime | None:
    following: datetime | None = await session.scalar(
        select(func.min(Interaction.created_at)).where(
            Interaction.tenant_id == interaction.tenant_id,
            Interaction.contact_id == interaction.contact_id,
            Interaction.channel == interaction.channel,
            Interaction.created_at > interaction.created_at,
        )
    )
    return following


async def _reply_authors(session: AsyncSession, interaction_id: str) -> dict[str, str]:
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


def _line(message: Message, contact: str, authors: dict[str, str]) -> TranscriptLine:
    source = message.source if isinstance(message.source, dict) else {}
    if message.direction == "incoming":
        who = contact
    else:
        agent = authors.get(str(source.get("notification_id")))
        who = f"agent {agent}" if agent else "Nudge"
    return TranscriptLine(
        at=message.at,
        direction=message.direction,
        who=who,
        text=message.text,
        links=media_links(message.body),
    )


def media_links(body: Any) -> list[str]:
    """The links to media a stored message carries (an image, a card's image, the media an
    inbound message came with), each once."""
    if not isinstance(body, dict):
        return []
    found: list[Any] = []
    image = body.get("image")
    if isinstance(image, dict):
        found.append(image.get("url") or image.get("link"))
    card = body.get("card")
    if isinstance(card, dict):
        found.append(card.get("image_url"))
    media = body.get("media")
    if isinstance(media, list):
        found.extend(media)
    return list(dict.fromkeys(link for link in found if isinstance(link, str) and link))
