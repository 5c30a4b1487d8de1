"""The conversation history of contacts."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.models.events import MessageEvent
from nudge.models.tables import Contact, Message, utcnow
from nudge.store.pagination import PageRequest, keyset_page


async def history_page(
    session: AsyncSession, tenant_id: str, contact_id: str, page: PageRequest
) -> tuple[list[Message], str | None]:
    """Messages newest first; the cursor continues with older ones."""
    query = select(Message).where(Message.tenant_id == tenant_id, Message.contact_id == contact_id)
    rows, next_cursor = await keyset_page(
        session, query, Message.at, Message.id, page, descending=True
    )
    return [message for (message,) in rows], next_cursor


async def is_known_message(session: AsyncSession, tenant_id: str, external_message_id: str) -> bool:
    """True when the tenant's history already holds a message with this provider id."""
    rows = await session.execute(
        select(Message.id)
        .where(Message.tenant_id == tenant_id, Message.external_message_id == external_message_id)
        .limit(1)
    )
    return rows.first() is not None


async def add_event_message(
    session: AsyncSession, tenant_id: str, contact: Contact, event: MessageEvent
) -> bool:
    """Add a message posted to the events API to the contact's history (and, when it comes
    from the contact, make its channel their last used); False when its id is known already."""
    if await is_known_message(session, tenant_id, event.message_id):
        return False
    session.add(
        Message(
            tenant_id=tenant_id,
            contact_id=contact.id,
            direction=event.direction,
            channel=event.channel,
            kind="text",
            text=event.text,
            body={"kind": "text", "text": event.text},
            source={"type": "event"},
            external_message_id=event.message_id,
            at=event.at or utcnow(),
        )
    )
    if event.direction == "incoming":
        contact.last_channel = event.channel
    return True
