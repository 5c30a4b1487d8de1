"""Validation errors at chosen field paths, shared by the definition models."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str, str, Any]  # (path, error type, message, the value at fault)


def located_errors(title: str, problems: list[Problem]) -> ValidationError:
    """Errors at chosen paths below the model being validated (pydantic prefixes its own path)."""
    return ValidationError.from_exception_data(
        title,
        [
            InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=value)
            for loc, kind, message, value in problems
        ],
    )
