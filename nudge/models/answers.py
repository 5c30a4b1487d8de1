"""Reading a contact's short answer: yes or no, in the languages the seeds speak."""

from __future__ import annotations

import unicodedata
from typing import Literal

_YES = frozenset({"yes", "y", "si", "sim", "ok", "oui", "ja"})
_NO = frozenset({"no", "n", "nao", "non", "nein"})


def yes_or_no(text: str | None, payload: str | None = None) -> Literal["yes", "no"] | None:
    """ "yes" or "no" for a button payload or a text such as "Sí", "SIM", "no.", else None.

    A button's payload wins over its label. Accents and punctuation do not count, so "sí",
    "Si!" and "SÍ" are all yes; anything longer than a word is not an answer (a contact
    writing "yes but tomorrow" has a question, not a subscription)."""
    for value in (payload, text):
        word = _word(value)
        if word in _YES:
            return "yes"
        if word in _NO:
            return "no"
    return None


def _word(value: str | None) -> str | None:
    if not value:
        return None
    plain = unicodedata.normalize("NFKD", value.strip().lower())
    letters = "".join(c for c in plain if c.isalnum())
    return letters if letters and len(value.split()) == 1 else None
