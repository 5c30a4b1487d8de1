"""Phone numbers as Nudge stores them: E.164, parsed by Google's libphonenumber rules."""

from __future__ import annotations

import re

import phonenumbers

_WHATSAPP_ID = re.compile(r"^[1-9][0-9]{6,14}$")


def e164(value: str) -> str:
    """``value`` as E.164 (``+34600111222``); ``ValueError`` when it is not a valid number.

    Only international numbers are accepted (a leading ``+`` or ``00``): Nudge serves
    tenants in many countries, so there is no region to guess a national number's from.
    """
    compact = value.strip()
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    try:
        number = phonenumbers.parse(compact, None)
    except phonenumbers.NumberParseException:
        raise ValueError("must be an international phone number such as +34600111222") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError(f"{value!r} is not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def whatsapp_id(value: str) -> str:
    """A WhatsApp id (`wa_id`): the number's digits without `+`; ``ValueError`` otherwise."""
    digits = value.strip().removeprefix("+")
    if not _WHATSAPP_ID.match(digits):
        raise ValueError("must be the WhatsApp id's digits, such as 34600111222")
    return digits
