"""The outbox relay as a route dependency: what a route staged, it relays after its commit."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from nudge.runs.outbox import Relay


def _relay(request: Request) -> Relay:
    state = request.app.state
    return Relay(state.temporal, state.sessions, done=state.outbox_done)


RelayDep = Annotated[Relay, Depends(_relay)]
