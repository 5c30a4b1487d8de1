"""Card button presses: the signed link a button carries records the press."""

from __future__ import annotations

from html import escape
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse

from nudge.api.deps import SessionDep, TemporalDep
from nudge.errors import Conflict, NotFound
from nudge.models.followups import PressRecorded
from nudge.models.payloads import ButtonPress
from nudge.models.signals import PRESS_BUTTON
from nudge.runs.followups import signal_record
from nudge.security import ActionTokens
from nudge.store.records import find_record
from nudge.store.tenants import find_tenant_by_id

router = APIRouter(prefix="/v1/actions", tags=["actions"])

Token = Annotated[str, Path(max_length=2000, description="What the button's URL carries.")]


def _claims(request: Request, token: str) -> dict[str, str]:
    tokens: ActionTokens = request.app.state.tokens
    claims = tokens.verify(token)
    if claims is None or not {"t", "f", "r", "a", "c"} <= claims.keys():
        raise NotFound("action", "this link")
    if tokens.expired(claims):
        raise Conflict("this link has expired; use the newest reminder's button")
    return claims


@router.get("/{token}", response_class=HTMLResponse)
async def confirm_page(token: Token, request: Request) -> HTMLResponse:
    """A page that asks to confirm: link scanners in mail systems never press a button."""
    claims = _claims(request, token)
    action = escape(claims["a"])
    return HTMLResponse(
        f"<!doctype html><title>Confirm {action}</title>"
        f"<p>Record <b>{escape(claims['r'])}</b>: confirm <b>{action}</b>?</p>"
        f'<form method="post"><button type="submit">{action}</button></form>'
    )


@router.post("/{token}")
async def press(
    token: Token, request: Request, session: SessionDep, temporal: TemporalDep
) -> PressRecorded:
    """Record a button press: the button's actions run, then the record's follow-up ends."""
    claims = _claims(request, token)
    tenant = await find_tenant_by_id(session, claims["t"])
    record = await find_record(session, claims["t"], claims["f"], claims["r"])
    if tenant is None or record is None:
        raise NotFound("action", "this link")
    if claims.get("g", "1") != str(record.generation):
        raise Conflict(f"this button is from an earlier round of reminders for {claims['r']}")
    if record.state != "following":
        raise Conflict(f"the follow-up of {claims['r']} has already ended ({record.state})")
    # The run checks it too: a record followed again meanwhile has a run of a newer
    # generation under the same workflow id, which ignores a press meant for the old one.
    pressed = ButtonPress(
        action=claims["a"], by=f"contact {claims['c']}", generation=record.generation
    )
    await (
        session.commit()
    )  # read only: hold no transaction (on SQLite a lock) while Temporal answers
    if not await signal_record(
        temporal, tenant.slug, claims["f"], claims["r"], PRESS_BUTTON, pressed
    ):
        raise Conflict(f"the follow-up of {claims['r']} is not running")
    return PressRecorded(status="recorded", action=claims["a"], reconciliation_id=claims["r"])
