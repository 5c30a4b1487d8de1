"""Typed references to the signals of Nudge's workflows.

The workflows declare their handlers with these names, and the API and activities signal
through them, so a sender names the payload type it must send without importing a
workflow class. The names are in every history: renaming one breaks running runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from nudge.models.payloads import ButtonPress, Ending, JourneyAssignment, JourneyMessage

P = TypeVar("P")


@dataclass(frozen=True)
class Signal(Generic[P]):
    """A signal's registered name and the type of its one argument."""

    name: str
    payload: type[P]


class PollNow:
    """`poll_now` carries no argument."""


# Follow-up poller
POLL_NOW = Signal("poll_now", PollNow)
STOP_POLLER = Signal("stop", Ending)

# Follow-up record
RESOLVE_RECORD = Signal("resolve", Ending)
STOP_RECORD = Signal("stop", Ending)
REPLY_TO_RECORD = Signal("reply", Ending)
PRESS_BUTTON = Signal("press", ButtonPress)

# Journey enrollment
JOURNEY_MESSAGE = Signal("message", JourneyMessage)
JOURNEY_ASSIGNMENT = Signal("assignment", JourneyAssignment)
STOP_ENROLLMENT = Signal("stop", Ending)
