"""Who a follow-up attempt goes to: user and group mappings matched against contacts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.activities.extraction import recipient_values
from nudge.models.followups import Recipients
from nudge.models.tables import Contact, Group, GroupMember


@dataclass
class Resolved:
    contacts: list[Contact] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)


async def resolve_recipients(
    session: AsyncSession, tenant_id: str, mapping: Recipients, source: Any
) -> Resolved:
    """Contacts named by the record (or the recipient integration's response), deduplicated.

    A value that matches no contact is reported, never dropped silently.
    """
    resolved = Resolved()
    seen: set[str] = set()

    def add(contact: Contact) -> None:
        if contact.id not in seen:
            seen.add(contact.id)
            resolved.contacts.append(contact)

    if mapping.user is not None:
        column = getattr(Contact, mapping.user.match_on)
        for value in recipient_values(mapping.user.source, source):
            contact = (
                await session.execute(
                    select(Contact).where(Contact.tenant_id == tenant_id, column == value).limit(1)
                )
            ).scalar_one_or_none()
            if contact is None:
                resolved.unmatched.append(f"user {mapping.user.match_on}={value}")
            else:
                add(contact)
    if mapping.group is not None:
        for name in recipient_values(mapping.group.source, source):
            members = (
                await session.execute(
                    select(Contact)
                    .join(GroupMember, GroupMember.contact_id == Contact.id)
                    .join(Group, Group.id == GroupMember.group_id)
                    .where(Group.tenant_id == tenant_id, Group.name == name)
                    .order_by(Contact.external_id)
                )
            ).scalars()
            found = list(members)
            if not found:
                resolved.unmatched.append(f"group {name} (unknown or empty)")
            for contact in found:
                add(contact)
    return resolved
