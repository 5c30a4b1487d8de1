"""A contact as message templates see it and as channels address it."""

from __future__ import annotations

from nudge.messaging.channels.base import Recipient
from nudge.models.tables import Contact


def contact_context(contact: Contact) -> dict[str, object]:
    """What templates see as ``contact``."""
    return {
        "external_id": contact.external_id,
        "name": contact.name,
        "email": contact.email,
        "phone": contact.phone,
        "chat_id": contact.chat_id,
        "whatsapp_id": contact.whatsapp_id,
        "timezone": contact.timezone,
        "attributes": contact.attributes,
    }


def recipient_of(contact: Contact) -> Recipient:
    """The addresses a channel may send to."""
    return Recipient(
        external_id=contact.external_id,
        name=contact.name,
        email=contact.email,
        phone=contact.phone,
        chat_id=contact.chat_id,
        whatsapp_id=contact.whatsapp_id or (contact.phone.lstrip("+") if contact.phone else None),
    )
