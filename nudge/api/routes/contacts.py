"""Contacts and their conversation history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from nudge.api.deps import PageDep, ServiceDep, SessionDep
from nudge.models.directory import ContactPublic, ContactPut, MessagePublic
from nudge.models.pages import Page
from nudge.models.tables import Contact
from nudge.store.directory import get_contact, put_contact
from nudge.store.messages import history_page

router = APIRouter(prefix="/v1/contacts", tags=["contacts"])

ExternalId = Annotated[
    str, Path(min_length=1, max_length=200, description="The contact's id in your systems.")
]


def contact_public(contact: Contact) -> ContactPublic:
    return ContactPublic.model_validate(contact, from_attributes=True)


@router.put("/{external_id}")
async def upsert_contact(
    external_id: ExternalId, body: ContactPut, principal: ServiceDep, session: SessionDep
) -> ContactPublic:
    """Create or replace a contact."""
    contact = await put_contact(session, principal.tenant_id, external_id, body)
    await session.commit()
    return contact_public(contact)


@router.get("/{external_id}")
async def read_contact(
    external_id: ExternalId, principal: ServiceDep, session: SessionDep
) -> ContactPublic:
    """One contact."""
    return contact_public(await get_contact(session, principal.tenant_id, external_id))


@router.get("/{external_id}/messages")
async def read_history(
    external_id: ExternalId,
    principal: ServiceDep,
    session: SessionDep,
    page: PageDep,
) -> Page[MessagePublic]:
    """The contact's conversation history, newest first."""
    contact = await get_contact(session, principal.tenant_id, external_id)
    rows, next_cursor = await history_page(session, principal.tenant_id, contact.id, page)
    return Page[MessagePublic](
        items=[MessagePublic.model_validate(m, from_attributes=True) for m in rows],
        next_cursor=next_cursor,
    )
