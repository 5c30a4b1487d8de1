"""The one shape of every list the API answers: a page of items and the cursor of the next."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, Field

ItemT = TypeVar("ItemT")


class Page(BaseModel, Generic[ItemT]):
    """One page of a list, in the list's order; ask for the next with `cursor=next_cursor`."""

    items: list[ItemT]
    next_cursor: str | None = Field(
        description="Pass as `cursor` (with the same filters) for the next page; null on the last."
    )
