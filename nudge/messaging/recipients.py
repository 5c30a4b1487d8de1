"""Who a follow-up attempt goes to: user and group mappings matched against contacts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from nudge.integrations.extraction import recipient_values
from nudge.models.followups import Recipients
from nudge.models.tables import Contact
from nudge.store.directory import find_contact_by, members_of_group_named


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
        for value in recipient_values(mapping.user.source, source):
            contact = await find_contact_by(session, tenant_id, mapping.user.match_on, value)
            if contact is None:
                resolved.unmatched.append(f"user {mapping.user.match_on}={value}")
            else:
                add(contact)
    if mapping.group is not None:
        for name in recipient_values(mapping.group.source, source):
            found = await members_of_group_named(session, tenant_id, name)
            if not found:
                resolved.unmatched.append(f"group {name} (unknown or empty)")
            for contact in found:
                add(contact)
    return resolved
