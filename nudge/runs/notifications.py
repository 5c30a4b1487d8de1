"""Queueing an individual notification: stored as `queued` with its run's start (an outbox
entry, committed together), then the run is started."""

from __future__ import annotations

import logging

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from nudge.errors import Conflict, InvalidInput
from nudge.models.channels import LAST_USED
from nudge.models.db import transaction
from nudge.models.messages import MessageTemplate
from nudge.models.notifications import NotificationCreate
from nudge.models.payloads import SendNotificationInput
from nudge.models.tables import Contact, Notification, OutboxEntry
from nudge.naming import (
    NOTIFICATION_WORKFLOW,
    Kind,
    notification_workflow_id,
    search_attributes,
)
from nudge.runs.outbox import Relay, start_options
from nudge.settings import Settings
from nudge.store import outbox
from nudge.store.directory import external_id_of, find_channel, find_contact
from nudge.store.notifications import (
    add_notification,
    find_by_idempotency_key,
)

log = logging.getLogger(__name__)


async def queue_notification(
    client: Client,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    tenant_id: str,
    tenant_slug: str,
    request: NotificationCreate,
    idempotency_key: str | None = None,
) -> tuple[Notification, str]:
    """Store the notification with the start of its run (committed together), then start
    it; (notification, the contact's external id).

    Temporal being down delays the send, it does not lose it: the outbox relay starts the
    run. With an ``idempotency_key``, a retried request answers the notification the first
    try stored (and starts its run at once if that is still to do), so nothing is sent
    twice. Raises ``InvalidInput`` for an unknown contact or channel, or a key already used
    for another notification.
    """
    pending: list[str] = []
    entry: OutboxEntry | None = None
    async with transaction(sessions) as session:
        found = await _earlier_try(session, tenant_id, request, idempotency_key)
        if found is not None:
            notification, external_id = found
            pending = await outbox.pending_of_event(session, tenant_id, _event_key(notification))
        else:
            contact, channel = await _recipient_and_channel(session, tenant_id, request)
            notification = add_notification(
                session, tenant_id, contact, request, channel, idempotency_key
            )
            try:
                await session.flush()
            except IntegrityError:  # the same key, posted twice at once: the other try won
                raise Conflict("a request with this Idempotency-Key is in progress") from None
            external_id = contact.external_id
            entry = _stage_start(session, settings, notification, tenant_slug, external_id)
    relay = Relay(client, sessions)
    if entry is not None:
        await relay.relay_written([entry])
    elif pending:
        await relay.relay_ids(pending, by="retry")
    return notification, external_id


async def stage_notification(
    session: AsyncSession,
    settings: Settings,
    *,
    tenant_id: str,
    tenant_slug: str,
    contact: Contact,
    channel: str,
    message: MessageTemplate,
    idempotency_key: str,
) -> tuple[Notification, OutboxEntry]:
    """A notification Nudge sends of its own accord (a closed-hours reply), stored with its
    run's start in the caller's transaction. ``idempotency_key`` must be unique to what it
    answers: storing it twice is an ``IntegrityError`` for the caller."""
    request = NotificationCreate(contact_id=contact.external_id, channel=channel, message=message)
    notification = add_notification(session, tenant_id, contact, request, channel, idempotency_key)
    await session.flush()
    entry = _stage_start(session, settings, notification, tenant_slug, contact.external_id)
    return notification, entry


def _event_key(notification: Notification) -> str:
    return f"notification:{notification.id}"


async def _earlier_try(
    session: AsyncSession,
    tenant_id: str,
    request: NotificationCreate,
    idempotency_key: str | None,
) -> tuple[Notification, str] | None:
    """The notification an earlier request with this key stored, with its contact."""
    if idempotency_key is None:
        return None
    earlier = await find_by_idempotency_key(session, tenant_id, idempotency_key)
    if earlier is None:
        return None
    external_id = await external_id_of(session, earlier.contact_id)
    message = request.message.model_dump(mode="json", exclude_none=True)
    if (external_id, earlier.channel, earlier.message) != (
        request.contact_id,
        request.channel,
        message,
    ):
        raise InvalidInput.at(
            ("header", "Idempotency-Key"),
            "already used for another notification; use a new key for a new request",
        )
    return earlier, external_id


def _stage_start(
    session: AsyncSession,
    settings: Settings,
    notification: Notification,
    tenant_slug: str,
    external_id: str,
) -> OutboxEntry:
    channel = notification.resolved_channel
    return outbox.add_start(
        session,
        tenant_id=notification.tenant_id,
        workflow=NOTIFICATION_WORKFLOW,
        workflow_id=notification_workflow_id(tenant_slug, notification.id),
        arg=SendNotificationInput(
            tenant_id=notification.tenant_id,
            tenant=tenant_slug,
            notification_id=notification.id,
            contact=external_id,
            channel=channel,
        ),
        # A second relay finds the first one's run, running or closed: never a second run.
        options=start_options(
            settings.task_queue,
            search_attributes(tenant_slug, Kind.NOTIFICATION, contact=external_id),
            f"Notification to {external_id} on {channel}",
            reuse="reject_duplicate",
        ),
        event_key=_event_key(notification),
    )


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
