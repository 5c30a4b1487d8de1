"""Reply buttons pressed on a provider (WhatsApp): which record's card, and which action."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from nudge.messaging.inbound import InboundMessage
from nudge.models.payloads import ButtonPress
from nudge.models.tables import Contact, Delivery, FollowUpRecord
from nudge.store.receipts import delivery_of_message

RECORD_OWNER = "record:"


async def pressed_buttons(
    session: AsyncSession,
    tenant_id: str,
    channel: str,
    contact: Contact,
    message: InboundMessage,
) -> dict[str, ButtonPress]:
    """The press a message is, by record id: its payload is an action of the card it
    answers (named by `context_message_id`), sent to this contact for a record of this
    generation. Anything else is an ordinary reply."""
    if message.payload is None or message.context_message_id is None:
        return {}
    delivery = await delivery_of_message(session, tenant_id, channel, message.context_message_id)
    if delivery is None or delivery.contact_id != contact.id:
        return {}
    record_id = (delivery.belongs_to or "").removeprefix(RECORD_OWNER)
    if not (delivery.belongs_to or "").startswith(RECORD_OWNER):
        return {}
    record = await session.get(FollowUpRecord, record_id)
    if record is None or message.payload not in _card_actions(delivery):
        return {}
    generation = (delivery.outbound or {}).get("source", {}).get("generation", 1)
    press = ButtonPress(
        action=message.payload, by=f"contact {contact.external_id}", generation=generation
    )
    return {record.id: press}


def _card_actions(delivery: Delivery) -> set[str]:
    card = (delivery.outbound or {}).get("message", {}).get("card") or {}
    return {str(button.get("action")) for button in card.get("buttons", [])}
