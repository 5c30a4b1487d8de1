"""Individual notifications and their status."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.errors import NotFound
from nudge.models.tables import Notification


async def get_notification(
    session: AsyncSession, tenant_id: str, notification_id: str
) -> Notification:
    notification = (
        await session.execute(
            select(Notification).where(
                Notification.tenant_id == tenant_id, Notification.id == notification_id
            )
        )
    ).scalar_one_or_none()
    if notification is None:
        raise NotFound("notification", notification_id)
    return notification
