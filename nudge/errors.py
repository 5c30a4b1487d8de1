"""Domain errors, raised below the API and mapped to HTTP answers in one place."""

from __future__ import annotations

from collections.abc import Sequence


class NudgeError(Exception):
    """Base of every error Nudge raises on purpose."""


class NotFound(NudgeError):
    """The object does not exist, or belongs to another tenant (never say which)."""

    def __init__(self, what: str, key: str) -> None:
        super().__init__(f"{what} {key!r} not found")
        self.what = what
        self.key = key


class Conflict(NudgeError):
    """The request contradicts the current state (already exists, already enrolled, ...)."""


class InvalidInput(NudgeError):
    """Input that passed the schema but not the rules that need the database.

    ``loc`` is a field path in FastAPI's shape, e.g. ``("body", "members", 2)``.
    """

    def __init__(
        self,
        problems: Sequence[tuple[tuple[str | int, ...], str]],
        extra: dict[str, object] | None = None,
    ) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems))
        self.problems = list(problems)
        # More of the answer's body beside `detail` (a CSV's problems by line and column).
        self.extra = extra or {}

    @classmethod
    def at(cls, loc: tuple[str | int, ...], message: str) -> InvalidInput:
        return cls([(loc, message)])


class Unavailable(NudgeError):
    """A service Nudge depends on (Temporal, the database) cannot be reached; try again."""
