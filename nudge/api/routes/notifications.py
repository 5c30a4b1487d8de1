"""Individual notifications: one message to one contact, sent by a workflow."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.api.deps import ServiceDep, SessionDep, SettingsDep, TemporalDep
from nudge.errors import InvalidInput
from nudge.models.channels import LAST_USED
from nudge.models.notifications import NotificationCreate, NotificationPublic
from nudge.models.payloads import SendNotificationInput
from nudge.models.tables import Contact, Notification, utcnow
from nudge.naming import Kind, notification_workflow_id, search_attributes
from nudge.store.directory import find_channel, find_contact
from nudge.store.notifications import get_notification
from nudge.store.tenants import Principal
from nudge.workflows.notification import SendNotification

router = APIRouter(prefix="/v1/notifications", tags=["notifications"])
log = logging.getLogger(__name__)


def notification_public(n: Notification, contact: str, tenant: str) -> NotificationPublic:
    return NotificationPublic(
        id=n.id,
        contact_id=contact,
        channel=n.channel,
        status=n.status,
        error=n.error,
        delivered_on=n.resolved_channel,
        message=n.message,
        workflow_id=notification_workflow_id(tenant, n.id),
        created_at=n.created_at,
        updated_at=n.updated_at,
    )


async def _recipient_and_channel(
    session: AsyncSession, principal: Principal, body: NotificationCreate
) -> tuple[Contact, str]:
    contact = await find_contact(session, principal.tenant_id, body.contact_id)
    if contact is None:
        raise InvalidInput.at(
            ("body", "contact_id"), f"no contact with external id {body.contact_id!r}"
        )
    channel = body.channel
    if channel == LAST_USED:
        if contact.last_channel is None:
            raise InvalidInput.at(
                ("body", "channel"),
                f"contact {body.contact_id!r} has not written on any channel yet; name a channel",
            )
        channel = contact.last_channel
    if await find_channel(session, principal.tenant_id, channel) is None:
        raise InvalidInput.at(("body", "channel"), f"no channel {channel!r}")
    return contact, channel


@router.post("", status_code=status.HTTP_202_ACCEPTED)
async def send_notification(
    body: NotificationCreate,
    principal: ServiceDep,
    session: SessionDep,
    temporal: TemporalDep,
    settings: SettingsDep,
    response: Response,
) -> NotificationPublic:
    """Queue one message to one contact; it is sent by a workflow, effectively once."""
    contact, channel = await _recipient_and_channel(session, principal, body)
    notification = Notification(
        tenant_id=principal.tenant_id,
        contact_id=contact.id,
        channel=body.channel,
        resolved_channel=channel,
        message=body.message.model_dump(mode="json", exclude_none=True),
        status="queued",
    )
    session.add(notification)
    await session.commit()
    workflow_id = notification_workflow_id(principal.tenant, notification.id)
    try:
        await temporal.start_workflow(
            SendNotification.run,
            SendNotificationInput(
                tenant_id=principal.tenant_id,
                tenant=principal.tenant,
                notification_id=notification.id,
                contact=contact.external_id,
                channel=channel,
            ),
            id=workflow_id,
            task_queue=settings.task_queue,
            search_attributes=search_attributes(
                principal.tenant, Kind.NOTIFICATION, contact=contact.external_id
            ),
            static_summary=f"Notification to {contact.external_id} on {channel}",
        )
    except Exception as exc:
        log.exception("could not start %s", workflow_id)
        notification.status, notification.error = "failed", f"could not be queued: {exc}"
        notification.updated_at = utcnow()
        await session.commit()
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, detail="Temporal is unreachable; try again"
        ) from None
    response.headers["Location"] = f"/v1/notifications/{notification.id}"
    return notification_public(notification, contact.external_id, principal.tenant)


@router.get("/{notification_id}")
async def read_notification(
    notification_id: Annotated[str, Path(max_length=64)], principal: ServiceDep, session: SessionDep
) -> NotificationPublic:
    """A notification's status: queued, sent, or failed with the reason."""
    notification = await get_notification(session, principal.tenant_id, notification_id)
    contact = await session.get_one(Contact, notification.contact_id)
    return notification_public(notification, contact.external_id, principal.tenant)
