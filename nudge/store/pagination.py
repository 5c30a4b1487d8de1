"""Keyset pagination: one page of any query, in the order of a sort column and a unique
tie-breaker (usually the id), continued by an opaque cursor.

A cursor only says where the previous page ended: the position (sort value, tie-breaker) of
its last row. It never selects rows by itself: the caller's query keeps its own filters,
the tenant's first, so a cursor that was tampered with, or that another tenant was given,
can move the position within the caller's rows but never reach anyone else's. It names the
ordering it was made for, and anything that does not decode to a position of the right
types for that ordering is refused as a 422 at `query.cursor` (never a database error).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, and_, or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.types import TypeDecorator

from nudge.errors import InvalidInput

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
# Enough for a position of the longest keys the API sorts by (ids, names of 200 characters).
MAX_CURSOR_LENGTH = 2000

CURSOR_AT = ("query", "cursor")
_MAX_INT = 2**31 - 1
_MAX_TEXT = 500


@dataclass(frozen=True)
class PageRequest:
    """What a client asked for: at most ``limit`` rows, after the position in ``cursor``."""

    limit: int = DEFAULT_LIMIT
    cursor: str | None = None


async def keyset_page(
    session: AsyncSession,
    query: Select[*tuple[Any, ...]],
    sort: InstrumentedAttribute[Any],
    tiebreak: InstrumentedAttribute[Any],
    page: PageRequest,
    *,
    descending: bool = False,
) -> tuple[list[tuple[Any, ...]], str | None]:
    """One page of ``query`` (whose filters stay as they are) ordered by ``sort`` then
    ``tiebreak`` (unique together), and the cursor of the next page, None on the last one.

    The rows are tuples of what ``query`` selects. Raises ``InvalidInput`` at
    ``query.cursor`` for a cursor this ordering did not give out."""
    ordering = _ordering(sort, tiebreak, descending)
    if page.cursor is not None:
        after_sort, after_tiebreak = _decode(page.cursor, ordering, (sort, tiebreak))
        if descending:
            beyond = or_(sort < after_sort, and_(sort == after_sort, tiebreak < after_tiebreak))
        else:
            beyond = or_(sort > after_sort, and_(sort == after_sort, tiebreak > after_tiebreak))
        query = query.where(beyond)
    order = (sort.desc(), tiebreak.desc()) if descending else (sort.asc(), tiebreak.asc())
    # The position of each row rides along as two extra columns, so any query can be paged.
    paged = query.add_columns(sort, tiebreak).order_by(None).order_by(*order).limit(page.limit + 1)
    rows = [tuple(row) for row in (await session.execute(paged)).all()]
    more = len(rows) > page.limit
    rows = rows[: page.limit]
    next_cursor = _encode(ordering, rows[-1][-2:]) if more and rows else None
    return [row[:-2] for row in rows], next_cursor


def _ordering(sort: Any, tiebreak: Any, descending: bool) -> str:
    # A short fingerprint, so a cursor of another list (or the other direction) is refused.
    name = f"{sort.expression}|{tiebreak.expression}|{'desc' if descending else 'asc'}"
    return hashlib.sha256(name.encode()).hexdigest()[:12]


def _encode(ordering: str, position: Sequence[Any]) -> str:
    values = [v.astimezone(UTC).isoformat() if isinstance(v, datetime) else v for v in position]
    text = json.dumps([ordering, *values], separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode(cursor: str, ordering: str, columns: Sequence[Any]) -> tuple[Any, ...]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.b64decode(padded, altchars=b"-_", validate=True))
        if not isinstance(data, list) or len(data) != 1 + len(columns) or data[0] != ordering:
            raise ValueError("not a position of this list")
        return tuple(_value(v, _python_type(c)) for v, c in zip(data[1:], columns, strict=True))
    except (ValueError, binascii.Error, OverflowError):
        raise InvalidInput.at(CURSOR_AT, "not a cursor this list gave out") from None


def _python_type(column: Any) -> type:
    kind = column.type
    while isinstance(kind, TypeDecorator):
        kind = kind.impl_instance
    python_type: type = kind.python_type
    return python_type


def _value(value: Any, python_type: type) -> Any:
    """A cursor's value as the column's type, or ValueError: never one the database refuses."""
    if python_type is datetime and isinstance(value, str):
        at = datetime.fromisoformat(value)
        if at.tzinfo is None:
            raise ValueError("a time without its zone")
        return at.astimezone(UTC)
    if python_type is int and type(value) is int and abs(value) <= _MAX_INT:
        return value
    if python_type is str and isinstance(value, str) and len(value) <= _MAX_TEXT:
        if "\x00" in value:
            raise ValueError("a NUL character")
        value.encode()  # lone surrogates (from a JSON escape) raise UnicodeEncodeError
        return value
    raise ValueError("a value of the wrong type")
