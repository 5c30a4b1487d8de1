"""The conversation history of contacts."""

from __future__ import annotations

import base64
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.models.tables import Message


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
