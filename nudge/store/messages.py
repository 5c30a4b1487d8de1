"""The conversation history of contacts."""

from __future__ import annotations

import base64
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.models.events import MessageEvent
from nudge.models.tables import Contact, Message, utcnow


def encode_cursor(message: Message) -> str:
    return base64.urlsafe_b64encode(f"{message.at.isoformat()}|{message.id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        at, message_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        return datetime.fromisoformat(at), message_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("cursor is not one this API gave out") from exc


async def history_page(
    session: AsyncSession, tenant_id: str, contact_id: str, limit: int, cursor: str | None
) -> tuple[list[Message], str | None]:
    """Messages newest first; the cursor continues with older ones."""
    query = select(Message).where(Message.tenant_id == tenant_id, Message.contact_id == contact_id)
    if cursor is not None:
        at, message_id = decode_cursor(cursor)
        query = query.where(or_(Message.at < at, and_(Message.at == at, Message.id < message_id)))
    query = query.order_by(Message.at.desc(), Message.id.desc()).limit(limit + 1)
    rows = list((await session.execute(query)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1]) if more and rows else None


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
