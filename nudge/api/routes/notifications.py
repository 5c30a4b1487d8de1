"""Individual notifications: one message to one contact, sent by a workflow."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Response, status

from nudge.api.deps import ServiceDep, SessionDep, SessionsDep, SettingsDep, TemporalDep
from nudge.api.rate_limits import RATE_LIMITED, limit_notifications
from nudge.models.deliveries import DeliveryState
from nudge.models.notifications import NotificationCreate, NotificationPublic
from nudge.models.tables import Notification
from nudge.naming import notification_workflow_id
from nudge.runs.notifications import queue_notification
from nudge.store.delivery_states import states_belonging_to
from nudge.store.directory import external_id_of
from nudge.store.notifications import get_notification

router = APIRouter(prefix="/v1/notifications", tags=["notifications"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]{1,200}$",
        description="Your key for this request: a retry with the same key and body answers"
        " the same notification and never sends twice.",
    ),
]


def notification_public(
    n: Notification, contact: str, tenant: str, delivery: DeliveryState | None = None
) -> NotificationPublic:
    return NotificationPublic(
        delivery=delivery,
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


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[Depends(limit_notifications)],
    responses=RATE_LIMITED,
)
async def send_notification(
    body: NotificationCreate,
    principal: ServiceDep,
    sessions: SessionsDep,
    temporal: TemporalDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> NotificationPublic:
    """Queue one message to one contact; it is sent by a workflow, effectively once."""
    notification, external_id = await queue_notification(
        temporal,
        sessions,
        settings,
        tenant_id=principal.tenant_id,
        tenant_slug=principal.tenant_slug,
        request=body,
        idempotency_key=idempotency_key,
    )
    response.headers["Location"] = f"/v1/notifications/{notification.id}"
    return notification_public(notification, external_id, principal.tenant_slug)


@router.get("/{notification_id}")
async def read_notification(
    notification_id: Annotated[str, Path(max_length=64)], principal: ServiceDep, session: SessionDep
) -> NotificationPublic:
    """A notification's status: queued, sent, failed with the reason, or unknown (a try died
    while the provider answered, on a channel that cannot drop copies: not sent again unless
    an operator resends the delivery)."""
    notification = await get_notification(session, principal.tenant_id, notification_id)
    external_id = await external_id_of(session, notification.contact_id)
    owner = f"notification:{notification.id}"
    states = await states_belonging_to(session, principal.tenant_id, [owner])
    delivery = states.get(owner, [None])[0]
    return notification_public(notification, external_id, principal.tenant_slug, delivery)
