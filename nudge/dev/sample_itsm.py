"""SAMPLE DATA: a tiny ITSM for trying follow-ups with `make dev`. Never mounted in production.

Tickets live in a JSON file under the data dir. Send `Authorization: Bearer demo-itsm-token`.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, HTTPException, Request, status
from pydantic import BaseModel, ConfigDict, EmailStr, Field

router = APIRouter(prefix="/demo/itsm/api", tags=["sample ITSM (demo data)"])

DEMO_TOKEN = "demo-itsm-token"
_lock = threading.Lock()
SAMPLE_TICKETS = [
    {
        "number": "INC0012",
        "short_description": "New laptop for the design team",
        "state": "pending_approval",
        "approver": {"email": "ada@example.com"},
        "assignment_group": "service-desk",
    },
    {
        "number": "INC0013",
        "short_description": "Access to the finance share",
        "state": "pending_approval",
        "approver": {"email": "ada@example.com"},
        "assignment_group": "service-desk",
    },
]

State = Literal["pending_approval", "approved", "rejected", "resolved"]


class TicketIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    number: Annotated[str, Field(pattern=r"^[A-Z]{2,5}[0-9]{3,10}$")]
    short_description: Annotated[str, Field(min_length=1, max_length=200)]
    approver_email: EmailStr
    state: State = "pending_approval"


class TicketChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: State


def _file(request: Request) -> Path:
    path: Path = request.app.state.settings.data_dir / "demo-itsm.json"
    return path


def _load(request: Request) -> list[dict[str, Any]]:
    path = _file(request)
    if not path.exists():
        return [dict(t) for t in SAMPLE_TICKETS]
    tickets: list[dict[str, Any]] = json.loads(path.read_text())
    return tickets


def _save(request: Request, tickets: list[dict[str, Any]]) -> None:
    path = _file(request)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tickets, indent=2))


def _check(authorization: str | None) -> None:
    if authorization != f"Bearer {DEMO_TOKEN}":
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="use Bearer demo-itsm-token")


def _find(tickets: list[dict[str, Any]], number: str) -> dict[str, Any]:
    for ticket in tickets:
        if ticket["number"] == number:
            return ticket
    raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no ticket {number}")


@router.get("/tickets")
def list_tickets(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    state: State | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Tickets, optionally in one state (ServiceNow-like `result` list)."""
    _check(authorization)
    with _lock:
        tickets = _load(request)
    return {"result": [t for t in tickets if state is None or t["state"] == state]}


@router.post("/tickets", status_code=status.HTTP_201_CREATED)
def create_ticket(
    body: TicketIn, request: Request, authorization: Annotated[str | None, Header()] = None
) -> dict[str, Any]:
    """Open a ticket."""
    _check(authorization)
    ticket = {
        "number": body.number,
        "short_description": body.short_description,
        "state": body.state,
        "approver": {"email": body.approver_email},
        "assignment_group": "service-desk",
    }
    with _lock:
        tickets = [t for t in _load(request) if t["number"] != body.number] + [ticket]
        _save(request, tickets)
    return ticket


@router.patch("/tickets/{number}")
def change_ticket(
    number: str,
    body: TicketChange,
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """Change a ticket's state (e.g. approve it by hand, so its reminders stop)."""
    return _set_state(request, authorization, number, body.state)


@router.post("/tickets/{number}/approve")
def approve(
    number: str, request: Request, authorization: Annotated[str | None, Header()] = None
) -> dict[str, Any]:
    """What the follow-up's Approve button calls."""
    return _set_state(request, authorization, number, "approved")


@router.post("/tickets/{number}/reject")
def reject(
    number: str, request: Request, authorization: Annotated[str | None, Header()] = None
) -> dict[str, Any]:
    """What the follow-up's Reject button calls."""
    return _set_state(request, authorization, number, "rejected")


@router.post("/tickets/{number}/escalate")
def escalate(
    number: str, request: Request, authorization: Annotated[str | None, Header()] = None
) -> dict[str, Any]:
    """What the follow-up calls after its last reminder."""
    _check(authorization)
    with _lock:
        tickets = _load(request)
        ticket = _find(tickets, number)
        ticket["escalated"] = True
        _save(request, tickets)
    return ticket


def _set_state(
    request: Request, authorization: str | None, number: str, state: State
) -> dict[str, Any]:
    _check(authorization)
    with _lock:
        tickets = _load(request)
        ticket = _find(tickets, number)
        ticket["state"] = state
        _save(request, tickets)
    return ticket
