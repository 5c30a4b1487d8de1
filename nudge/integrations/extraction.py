"""Records and recipients out of integration responses, with JMESPath.

Pure functions: the poll activity extracts and reconciles records, the attempt activity
reads recipients. Nothing is guessed: an item without a usable id is skipped and reported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult

# The column that keeps it (followup_records.reconciliation_id) holds 200 characters.
MAX_RECONCILIATION_ID = 200


class ExtractionError(ValueError):
    """An expression that cannot be evaluated, or a looping element that is not a list."""


@dataclass(frozen=True)
class Skipped:
    """An item of the looping element that is not a record, and why (``index`` from 0)."""

    index: int
    reason: str


@dataclass
class Extraction:
    """Records by reconciliation id, in the order of the looping element; the items skipped."""

    records: dict[str, Any] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)


def extract_records(
    looping_element: str, reconciliation_id: str, responses: Mapping[str, Any]
) -> Extraction:
    """The records ``looping_element`` finds in ``{integration name: response}``.

    The looping element must give a list (null gives no records). Each item's id is
    ``reconciliation_id`` evaluated over the item: a non-empty string (kept as is) or a
    number (``12`` and ``12.0`` give "12"). An item whose id is missing, null, empty or of
    another type, or repeats an earlier item's id (the first wins), is skipped.

    Raises ``ExtractionError`` naming the expression.
    """
    items = _search(looping_element, dict(responses), "looping element")
    if items is None:
        return Extraction()
    if not isinstance(items, list):
        raise ExtractionError(
            f"looping element {looping_element!r} gave {_json_type(items)}, not a list"
        )
    id_expression = _compiled(reconciliation_id, "reconciliation id")
    extraction = Extraction()
    first_seen: dict[str, int] = {}
    for index, item in enumerate(items):
        try:
            record_id, problem = _record_id(id_expression.search(item))
        except JMESPathError as exc:
            record_id, problem = None, f"cannot be evaluated: {exc}"
        if record_id is None:
            reason = f"reconciliation id {reconciliation_id!r} {problem}"
        elif record_id in first_seen:
            reason = f"duplicate reconciliation id {record_id!r} (item {first_seen[record_id]})"
        else:
            first_seen[record_id] = index
            extraction.records[record_id] = item
            continue
        extraction.skipped.append(Skipped(index, reason))
    return extraction


def recipient_values(expression: str, data: Any) -> list[str]:
    """The recipient keys (external ids, emails, phones, group names) ``expression`` gives.

    A string gives itself; a number its text (``7`` gives "7"); a list gives its strings and
    numbers, in order, without repeats. Values are stripped of surrounding spaces; null,
    empty strings, booleans, objects and nested lists are ignored, so the result may be [].

    Raises ``ExtractionError`` naming the expression when it cannot be evaluated.
    """
    found = _search(expression, data, "recipient source")
    values: list[str] = []
    for value in found if isinstance(found, list) else [found]:
        text = _scalar_text(value)
        if text and text not in values:
            values.append(text)
    return values


# --- helpers ----------------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _compile(expression: str) -> ParsedResult:
    return jmespath.compile(expression)


def _compiled(expression: str, role: str) -> ParsedResult:
    try:
        return _compile(expression)
    except JMESPathError as exc:
        raise ExtractionError(f"{role} {expression!r} is not valid JMESPath: {exc}") from None


def _search(expression: str, data: Any, role: str) -> Any:
    parsed = _compiled(expression, role)
    try:
        return parsed.search(data)
    except JMESPathError as exc:
        raise ExtractionError(f"{role} {expression!r} cannot be evaluated: {exc}") from None


def _record_id(value: Any) -> tuple[str | None, str]:
    """The id as text, or None and what is wrong with it."""
    if value is None:
        return None, "is missing or null"
    if isinstance(value, str):
        if not value.strip():
            return None, "is empty"
        if len(value) > MAX_RECONCILIATION_ID:
            return None, f"is {len(value)} characters long; at most {MAX_RECONCILIATION_ID}"
        return value, ""
    text = _number_text(value)
    if text is None:
        return None, f"is {_json_type(value)}, not a string or number"
    if len(text) > MAX_RECONCILIATION_ID:
        return None, f"is a number of {len(text)} digits; at most {MAX_RECONCILIATION_ID}"
    return text, ""


def _scalar_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip()
    return _number_text(value)


def _number_text(value: Any) -> str | None:
    """``7`` and ``7.0`` give "7", ``7.5`` gives "7.5"; booleans and non-numbers give None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value)) if value.is_integer() else repr(value)
    return None


def _json_type(value: Any) -> str:
    """The JSON name of ``value``'s type, with its article ("an object", "a string")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"
