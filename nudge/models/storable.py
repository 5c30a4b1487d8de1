"""What JSON Nudge can store and answer back: no NUL character, and no nesting past a depth.

PostgreSQL stores no NUL (U+0000) in text or JSONB: such a value fails in the database. A
free-form value (`attributes`, `variables`) nested some hundreds of levels deep is stored,
then cannot be serialized again, so every later read of it fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

NUL = "\x00"
NUL_MESSAGE = "text cannot hold a NUL character (U+0000)"
# Definitions nest some 8 levels; serializing stops at 255, with the answer's own around it.
MAX_DEPTH = 64
DEPTH_MESSAGE = f"nested deeper than {MAX_DEPTH} levels"

Loc = tuple[str | int, ...]


def json_problems(value: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
    """Where a JSON value holds a NUL character (in a string or a key) or nests too deep."""
    todo: list[tuple[Any, Loc, int]] = [(value, loc, 0)]  # no recursion: values may nest deep
    while todo:
        node, where, depth = todo.pop()
        if isinstance(node, dict | list) and depth >= MAX_DEPTH:
            yield where, DEPTH_MESSAGE
        elif isinstance(node, str):
            if NUL in node:
                yield where, NUL_MESSAGE
        elif isinstance(node, dict):
            for key, item in node.items():
                if NUL in key:
                    yield (*where, key), NUL_MESSAGE
                todo.append((item, (*where, key), depth + 1))
        elif isinstance(node, list):
            todo.extend((item, (*where, i), depth + 1) for i, item in enumerate(node))
