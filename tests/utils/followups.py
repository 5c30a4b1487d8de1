"""Follow-up definitions for tests: one approval follow-up, changed where a test needs it."""

from __future__ import annotations

import copy
import json
from typing import Any, Final

from nudge.models.followups import FOLLOWUP_EXAMPLE

EXAMPLE_ITSM = "https://itsm.example.com"


class _Remove:
    def __repr__(self) -> str:
        return "REMOVE"


REMOVE: Final = _Remove()
"""An override value that takes the key out of the definition."""


def followup_definition(itsm: str = EXAMPLE_ITSM, **overrides: Any) -> dict[str, Any]:
    """The approval follow-up of design/API.md, its ITSM at ``itsm``, with ``overrides``.

    Overrides go in by key: a dict is merged into the default one (``message={"card":
    {"title": ...}}`` changes the title only), any other value replaces it (lists too),
    and ``REMOVE`` takes the key out. The default, with the example ITSM, is the API.md
    example exactly.
    """
    # The API.md example is the model's own (FOLLOWUP_EXAMPLE); only its ITSM moves.
    default: dict[str, Any] = json.loads(json.dumps(FOLLOWUP_EXAMPLE).replace(EXAMPLE_ITSM, itsm))
    return _merged(default, overrides)


def _merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is REMOVE:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
