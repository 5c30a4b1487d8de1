"""Queueing an individual notification: stored as `queued` (committed), then its run starts."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from nudge.errors import InvalidInput, Unavailable
from nudge.models.channels import LAST_USED
from nudge.models.db import transaction
from nudge.models.notifications import NotificationCreate
from nudge.models.payloads import SendNotificationInput
from nudge.models.tables import Contact, Notification
from nudge.naming import (
    NOTIFICATION_WORKFLOW,
    Kind,
    notification_workflow_id,
    search_attributes,
)
from nudge.settings import Settings
from nudge.store.directory import find_channel, find_contact
from nudge.store.notifications import add_notification, mark_not_queued

log = logging.getLogger(__name__)


async def queue_notification(
    client: Client,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    tenant_id: str,
    tenant_slug: str,
    request: NotificationCreate,
) -> tuple[Notification, Contact]:
    """Store the notification, then start the run that sends it.

    Raises ``InvalidInput`` for an unknown contact or channel, and ``Unavailable`` when
    Temporal cannot be told (the notification is then recorded as failed, not left queued).
    """
    async with transaction(sessions) as session:
        contact, channel = await _recipient_and_channel(session, tenant_id, request)
        notification = add_notification(session, tenant_id, contact, request, channel)
        await session.flush()
    workflow_id = notification_workflow_id(tenant_slug, notification.id)
    try:
        await client.start_workflow(
            NOTIFICATION_WORKFLOW,
            SendNotificationInput(
                tenant_id=tenant_id,
                tenant=tenant_slug,
                notification_id=notification.id,
                contact=contact.external_id,
                channel=channel,
            ),
            id=workflow_id,
            task_queue=settings.task_queue,
            search_attributes=search_attributes(
                tenant_slug, Kind.NOTIFICATION, contact=contact.external_id
            ),
            static_summary=f"Notification to {contact.external_id} on {channel}",
        )
    except Exception as exc:
        log.exception("could not start %s", workflow_id)
        async with transaction(sessions) as session:
            await mark_not_queued(session, notification.id, str(exc))
        raise Unavailable("Temporal is unreachable; try again") from None
    return notification, contact


async def _recipient_and_channel(
    session: AsyncSession, tenant_id: str, request: NotificationCreate
) -> tuple[Contact, str]:
    contact = await find_contact(session, tenant_id, request.contact_id)
    if contact is None:
        raise InvalidInput.at(
            ("body", "contact_id"), f"no contact with external id {request.contact_id!r}"
        )
    channel = request.channel
    if channel == LAST_USED:
        if contact.last_channel is None:
            raise InvalidInput.at(
                ("body", "channel"),
                f"contact {request.contact_id!r} has not written on any channel yet;"
                " name a channel",
            )
        channel = contact.last_channel
    if await find_channel(session, tenant_id, channel) is None:
        raise InvalidInput.at(("body", "channel"), f"no channel {channel!r}")
    return contact, channel
