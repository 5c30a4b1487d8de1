"""Deliveries: what was sent, and the sends whose outcome is unknown, for operators."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from nudge.api.deps import AdminDep, PageDep, SessionDep, SettingsDep, TemporalDep
from nudge.errors import Conflict, NotFound
from nudge.models.deliveries import DeliveryPublic, DeliveryStatus, ResendAccepted, ResendPublic
from nudge.models.pages import Page
from nudge.models.tables import Delivery
from nudge.runs.deliveries import start_resend
from nudge.store.deliveries import deliveries_page, find_delivery, resends_of
from nudge.store.delivery_states import states_of
from nudge.store.directory import external_id_of

router = APIRouter(prefix="/v1/deliveries", tags=["deliveries"])

DeliveryId = Annotated[str, Path(max_length=64)]


@router.get("")
async def list_deliveries(
    principal: AdminDep,
    session: SessionDep,
    page: PageDep,
    status: Annotated[
        DeliveryStatus | None,
        Query(description="Only deliveries in this state, e.g. `unknown`."),
    ] = None,
) -> Page[DeliveryPublic]:
    """The tenant's deliveries, newest first: `?status=unknown` lists those to look at."""
    rows, next_cursor = await deliveries_page(session, principal.tenant_id, status, page)
    resends = await resends_of(session, principal.tenant_id, rows)
    items = [await _public(session, row, resends.get(row.idempotency_key)) for row in rows]
    return Page[DeliveryPublic](items=items, next_cursor=next_cursor)


@router.post(
    "/{delivery_id}/resend",
    status_code=status.HTTP_202_ACCEPTED,
    responses={503: {}},
)
async def resend(
    delivery_id: DeliveryId,
    principal: AdminDep,
    session: SessionDep,
    temporal: TemporalDep,
    settings: SettingsDep,
) -> ResendAccepted:
    """Send an `unknown` delivery again, once, under the key `<its key>#resend`: an operator
    who checked that the first try did not arrive (or that a copy is fine) says so."""
    delivery = await find_delivery(session, principal.tenant_id, delivery_id)
    if delivery is None:
        raise NotFound("delivery", delivery_id)
    if delivery.status != "unknown":
        raise Conflict(f"delivery {delivery_id} is {delivery.status}: only unknown ones are resent")
    if delivery.outbound is None:
        raise Conflict(f"delivery {delivery_id} was claimed before messages were kept with it")
    contact = await external_id_of(session, delivery.contact_id)
    await (
        session.commit()
    )  # read only: hold no transaction (on SQLite a lock) while Temporal answers
    workflow_id = await start_resend(temporal, settings, principal.tenant_slug, delivery, contact)
    return ResendAccepted(delivery_id=delivery.id, workflow_id=workflow_id)


async def _public(session: SessionDep, row: Delivery, resent: Delivery | None) -> DeliveryPublic:
    (state,) = await states_of(session, [row])
    return DeliveryPublic(
        **state.model_dump(),
        idempotency_key=row.idempotency_key,
        contact_id=await external_id_of(session, row.contact_id),
        tries=row.tries,
        resend=ResendPublic(id=resent.id, status=resent.status) if resent else None,
    )
