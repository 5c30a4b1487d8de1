"""Queueing an individual notification: stored as `queued` (committed), then its run starts."""

from __future__ import annotations

import logging

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from nudge.errors import Conflict, InvalidInput, Unavailable
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
from nudge.store.directory import external_id_of, find_channel, find_contact
from nudge.store.notifications import (
    add_notification,
    find_by_idempotency_key,
    mark_not_queued,
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
    """Store the notification, then start the run that sends it; (notification, the
    contact's external id).

    With an ``idempotency_key``, a retried request answers the notification the first try
    stored and starts its run if that try could not: a crash or a Temporal outage between
    the two never loses it, and nothing is sent twice. Raises ``InvalidInput`` for an
    unknown contact or channel, or a key already used for another notification, and
    ``Unavailable`` when Temporal cannot be told (without a key the notification is then
    recorded as failed; with one it stays queued for the retry).
    """
    async with transaction(sessions) as session:
        found = await _earlier_try(session, tenant_id, request, idempotency_key)
        if found is None:
            contact, channel = await _recipient_and_channel(session, tenant_id, request)
            notification = add_notification(
                session, tenant_id, contact, request, channel, idempotency_key
            )
            try:
                await session.flush()
            except IntegrityError:  # the same key, posted twice at once: the other try won
                raise Conflict("a request with this Idempotency-Key is in progress") from None
            external_id = contact.external_id
        else:
            notification, external_id = found
    if notification.status == "queued":
        await _start(client, sessions, settings, notification, tenant_slug, external_id)
    return notification, external_id


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


async def _start(
    client: Client,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    notification: Notification,
    tenant_slug: str,
    external_id: str,
) -> None:
    workflow_id = notification_workflow_id(tenant_slug, notification.id)
    channel = notification.resolved_channel
    try:
        await client.start_workflow(
            NOTIFICATION_WORKFLOW,
            SendNotificationInput(
                tenant_id=notification.tenant_id,
                tenant=tenant_slug,
                notification_id=notification.id,
                contact=external_id,
                channel=channel,
            ),
            id=workflow_id,
            task_queue=settings.task_queue,
            # A retry finds the run of the first try, running or closed: never a second one.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=search_attributes(
                tenant_slug, Kind.NOTIFICATION, contact=external_id
            ),
            static_summary=f"Notification to {external_id} on {channel}",
        )
    except WorkflowAlreadyStartedError:
        return
    except Exception as exc:
        log.exception("could not start %s", workflow_id)
        if notification.idempotency_key is None:
            # Nobody can retry this one: say so rather than leave it queued for ever.
            async with transaction(sessions) as session:
                await mark_not_queued(session, notification.id, str(exc))
            notification.status = "failed"
        raise Unavailable("Temporal is unreachable; try again") from None


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
