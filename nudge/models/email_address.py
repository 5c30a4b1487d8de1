"""Email addresses as mail systems take them: syntax only.

``pydantic.EmailStr`` refuses special-use domains (``ana@corp.local``, ``ops@it.internal``),
which companies use for internal mail. Nudge accepts every syntactically valid address; a
mailbox that does not exist shows on the delivery, not when the contact is saved.
"""

from __future__ import annotations

from typing import Annotated

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, Field


def _syntactically_valid(value: str) -> str:
    try:
        checked = validate_email(
            value,
            check_deliverability=False,
            globally_deliverable=False,
            allow_domain_literal=False,
            test_environment=True,
        )
    except EmailNotValidError as exc:
        if "special-use or reserved name" not in str(exc):
            raise ValueError(f"not an email address: {exc}") from None
        return _without_special_use_check(value)
    return checked.normalized


def _without_special_use_check(value: str) -> str:
    # email-validator checks special-use names unconditionally; check the same address with
    # its domain swapped for a neutral one, so every other rule still applies.
    local, _, domain = value.rpartition("@")
    probe = validate_email(
        f"{local}@example.com", check_deliverability=False, test_environment=True
    )
    labels = domain.split(".")
    if not all(labels) or any(len(label) > 63 for label in labels):
        raise ValueError("not an email address: the domain has an empty or too long label")
    return f"{probe.local_part}@{domain.lower()}"


EmailAddress = Annotated[
    str,
    Field(max_length=254, examples=["ada@example.com"]),
    AfterValidator(_syntactically_valid),
]
