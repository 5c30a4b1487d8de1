"""What contacts were told while closed, and who asked to be told at the opening."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.api.deps import AdminDep, PageDep, ServiceDep, SessionDep
from nudge.models.channels import CHANNEL_SLUG
from nudge.models.pages import Page
from nudge.models.tables import BusinessHours, ClosedReply, Contact
from nudge.store.business_hours import get_business_hours
from nudge.store.closed_replies import replies_page
from nudge.store.directory import get_contact

router = APIRouter(tags=["business hours"])

ReplyKind = Literal["unavailable", "subscription", "absence"]


class ClosedReplyPublic(BaseModel):
    schedule: str
    contact_id: str = Field(description="The contact's external id.")
    kind: ReplyKind = Field(
        description="`unavailable`: told it is closed; `subscription`: asked to be told at"
        " the opening; `absence`: got the absence message (once a day)."
    )
    period: str = Field(description="The closed period (when it began) or the absence's day.")
    channel: str
    created_at: datetime
    notified_at: datetime | None = Field(
        description="Subscriptions: when the opening notification went (null: still waiting)."
    )
    delivery_id: str | None


@router.get("/v1/business-hours/{schedule_id}/replies")
async def schedule_replies(
    schedule_id: Annotated[str, Path(pattern=CHANNEL_SLUG)],
    principal: AdminDep,
    session: SessionDep,
    page: PageDep,
    kind: Annotated[ReplyKind | None, Query(description="Only these.")] = None,
) -> Page[ClosedReplyPublic]:
    """Who was told the schedule was closed, who asked to be told when it opens, and when
    they were; newest first."""
    schedule = await get_business_hours(session, principal.tenant_id, schedule_id)
    rows, next_cursor = await replies_page(
        session, principal.tenant_id, page, schedule_id=schedule.id, kind=kind
    )
    return Page[ClosedReplyPublic](
        items=[await _public(session, row) for row in rows], next_cursor=next_cursor
    )


@router.get("/v1/contacts/{external_id}/closed-replies")
async def contact_replies(
    external_id: Annotated[str, Path(max_length=200)],
    principal: ServiceDep,
    session: SessionDep,
    page: PageDep,
) -> Page[ClosedReplyPublic]:
    """What the contact was told while closed, and their subscriptions; newest first."""
    contact = await get_contact(session, principal.tenant_id, external_id)
    rows, next_cursor = await replies_page(
        session, principal.tenant_id, page, contact_id=contact.id
    )
    return Page[ClosedReplyPublic](
        items=[await _public(session, row) for row in rows], next_cursor=next_cursor
    )


async def _public(session: AsyncSession, row: ClosedReply) -> ClosedReplyPublic:
    schedule = await session.get_one(BusinessHours, row.schedule_id)
    contact = await session.get_one(Contact, row.contact_id)
    return ClosedReplyPublic(
        schedule=schedule.slug,
        contact_id=contact.external_id,
        kind=row.kind,
        period=row.period,
        channel=row.channel,
        created_at=row.created_at,
        notified_at=row.notified_at,
        delivery_id=row.delivery_id,
    )
