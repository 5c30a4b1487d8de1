"""Agents' actions on interactions that Temporal must hear of, staged in the caller's
transaction: an answer is a notification (its run's start) and an `outgoing_message` event
for the contact's journeys; opening or transferring is an assignment for them.

Each function writes the interaction and returns it with the outbox entries to relay once
the caller has committed (the API's routes, and the inbox page, do both).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.errors import Conflict, InvalidInput
from nudge.models.events import MessageEvent
from nudge.models.inbox import OUTBOUND_CHANNEL_TYPES, InteractionCreate
from nudge.models.messages import TextMessage
from nudge.models.tables import Channel, Contact, Interaction, OutboxEntry
from nudge.runs.assignments import stage_assignment
from nudge.runs.incoming import stage_message
from nudge.runs.notifications import stage_notification
from nudge.settings import Settings
from nudge.store import interactions
from nudge.store.agents import InboxAgent
from nudge.store.directory import find_channel, find_contact
from nudge.store.notifications import find_by_idempotency_key

# A `{` that would open a Jinja2 tag; see `literal_template`.
_TAG_START = re.compile(r"\{(?=[{%#])")
_LITERAL_BRACE = "{{ '{' }}"
MAX_TEMPLATE = 10_000  # what a text message's template may hold (`TextMessage.text`)


@dataclass
class InboxChange:
    """The interaction after an action, and what to relay once the caller commits."""

    interaction: Interaction
    entries: list[OutboxEntry] = field(default_factory=list)


def literal_template(text: str) -> str:
    """A template that renders as ``text`` exactly: notifications are templates, an agent's
    words are not (each `{` that would start a tag is written as an expression)."""
    return _TAG_START.sub(_LITERAL_BRACE, text)


async def open_interaction(
    session: AsyncSession, agent: InboxAgent, interaction_id: str, at: datetime
) -> InboxChange:
    """Assign the interaction to the agent (`Conflict` naming who has it, if someone does);
    the contact's journeys hear of a manual assignment."""
    interaction, assigned_now = await interactions.claim(session, agent, interaction_id, at)
    change = InboxChange(interaction)
    if assigned_now:
        change.entries = await _assignment(session, agent, interaction, agent.agent)
    return change


async def transfer(
    session: AsyncSession, agent: InboxAgent, interaction_id: str, queue: str, at: datetime
) -> InboxChange:
    """Move the interaction to another queue (to its agent, when it has only one)."""
    interaction = await interactions.for_action(session, agent, interaction_id, assigned=False)
    assignee = await interactions.transfer(session, interaction, agent.agent, queue, at)
    change = InboxChange(interaction)
    change.entries = await _assignment(session, agent, interaction, assignee or queue)
    return change


async def _assignment(
    session: AsyncSession, agent: InboxAgent, interaction: Interaction, assignee: str
) -> list[OutboxEntry]:
    """The manual assignment, as `POST /v1/events/assignments` tells it."""
    contact = await session.get_one(Contact, interaction.contact_id)
    staged = await stage_assignment(
        session,
        agent.tenant_id,
        agent.tenant_slug,
        contact,
        assignee=assignee,
        manual=True,
        event_id=f"inbox-{uuid.uuid4().hex}",
    )
    return staged.entries


async def reply(
    session: AsyncSession,
    settings: Settings,
    agent: InboxAgent,
    interaction_id: str,
    text: str,
    at: datetime,
    *,
    idempotency_key: str | None = None,
) -> InboxChange:
    """Send the agent's answer on the interaction's channel (a notification, effectively
    once) and mark it `resolved`. With ``idempotency_key``, a retry changes and sends
    nothing more and answers the interaction as it is."""
    interaction = await interactions.for_action(session, agent, interaction_id)
    key = _reply_key(interaction, idempotency_key)
    if idempotency_key is not None and await find_by_idempotency_key(session, agent.tenant_id, key):
        return InboxChange(interaction)
    contact = await session.get_one(Contact, interaction.contact_id)
    await _existing_channel(session, agent.tenant_id, interaction.channel)
    return await _send_answer(session, settings, agent, interaction, contact, text, at, key)


def _reply_key(interaction: Interaction, idempotency_key: str | None) -> str:
    return f"inbox:{interaction.id}:{idempotency_key or uuid.uuid4().hex}"


async def _existing_channel(session: AsyncSession, tenant_id: str, slug: str) -> Channel:
    channel = await find_channel(session, tenant_id, slug)
    if channel is None:
        raise Conflict(f"channel {slug!r} does not exist (any more): nothing can be sent on it")
    return channel


async def _send_answer(
    session: AsyncSession,
    settings: Settings,
    agent: InboxAgent,
    interaction: Interaction,
    contact: Contact,
    text: str,
    at: datetime,
    key: str,
) -> InboxChange:
    try:
        notification, start = await stage_notification(
            session,
            settings,
            tenant_id=agent.tenant_id,
            tenant_slug=agent.tenant_slug,
            contact=contact,
            channel=interaction.channel,
            message=_text_message(text),
            idempotency_key=key,
        )
    except IntegrityError:  # the same Idempotency-Key, posted twice at once
        raise Conflict("an answer with this Idempotency-Key is being sent") from None
    interactions.record_reply(session, interaction, agent.agent, notification.id, at)
    # What `POST /v1/events/messages` does with an agent's outgoing message: the contact's
    # journeys hear of it (the `outgoing_message` exit). The notification's delivery puts
    # it in the history once sent, so it is not added here.
    event = MessageEvent(
        contact_id=contact.external_id,
        direction="outgoing",
        channel=interaction.channel,
        text=text,
        message_id=f"inbox-reply:{notification.id}",
        at=at,
    )
    staged = await stage_message(
        session,
        settings,
        agent.tenant_id,
        agent.tenant_slug,
        contact,
        event,
        f"message:{event.message_id}",
    )
    return InboxChange(interaction, [start, *staged.entries])


def _text_message(text: str) -> TextMessage:
    template = literal_template(text)
    if len(template) > MAX_TEMPLATE:
        raise InvalidInput.at(
            ("body", "text"), "too many `{{`, `{%` or `{#` in it to be sent as written"
        )
    try:
        return TextMessage(text=template)
    except ValidationError:
        raise InvalidInput.at(("body", "text"), "cannot be sent as written") from None


async def start_outbound(
    session: AsyncSession,
    settings: Settings,
    agent: InboxAgent,
    request: InteractionCreate,
    at: datetime,
) -> InboxChange:
    """A new email or SMS conversation the agent starts: an interaction assigned to them,
    `resolved` by its first message, which is sent like a reply."""
    contact = await find_contact(session, agent.tenant_id, request.contact_id)
    if contact is None:
        raise InvalidInput.at(
            ("body", "contact_id"), f"no contact with external id {request.contact_id!r}"
        )
    channel = await find_channel(session, agent.tenant_id, request.channel)
    if channel is None or channel.type not in OUTBOUND_CHANNEL_TYPES:
        raise InvalidInput.at(("body", "channel"), f"no email or sms channel {request.channel!r}")
    interaction = await interactions.open_outbound(session, agent, contact, channel, at)
    key = _reply_key(interaction, None)
    return await _send_answer(session, settings, agent, interaction, contact, request.text, at, key)
