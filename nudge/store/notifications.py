"""Individual notifications and their status."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.errors import NotFound
from nudge.models.notifications import NotificationCreate
from nudge.models.tables import Contact, Notification, utcnow


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


def add_notification(
    session: AsyncSession,
    tenant_id: str,
    contact: Contact,
    request: NotificationCreate,
    resolved_channel: str,
    idempotency_key: str | None = None,
) -> Notification:
    """A `queued` notification; its id is known once the session flushes."""
    notification = Notification(
        idempotency_key=idempotency_key,
        tenant_id=tenant_id,
        contact_id=contact.id,
        channel=request.channel,
        resolved_channel=resolved_channel,
        message=request.message.model_dump(mode="json", exclude_none=True),
        status="queued",
    )
    session.add(notification)
    return notification


async def mark_not_queued(session: AsyncSession, notification_id: str, why: str) -> None:
    notification = await session.get_one(Notification, notification_id)
    notification.status, notification.error = "failed", f"could not be queued: {why}"
    notification.updated_at = utcnow()


async def find_by_idempotency_key(
    session: AsyncSession, tenant_id: str, idempotency_key: str
) -> Notification | None:
    rows = await session.execute(
        select(Notification).where(
            Notification.tenant_id == tenant_id, Notification.idempotency_key == idempotency_key
        )
    )
    return rows.scalar_one_or_none()
