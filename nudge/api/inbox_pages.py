"""The agent inbox as web pages at `/inbox`: sign-in with an agent key, the queue, an
interaction (conversation, reply, resolve, transfer, end, tags, priority, notes), and the
contact's workflows in progress with their Stop buttons (also alone, for embedding, at
`/inbox/contacts/{id}/panel`).

Pages are part of the API process and act like its routes, with the same store and runs
functions and the same rules: the agent key in the cookie is checked on every request as
an API key is. Server-rendered, every value autoescaped (a contact's words are data); the
only script is a static file (`Content-Security-Policy: default-src 'self'`), which reloads
the live parts of a page when `/inbox/events` says something changed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, HTTPException, Path, Query, Request, status
from fastapi.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import ValidationError
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from nudge.api.deps import SessionDep, SettingsDep
from nudge.api.inbox_auth import (
    CSRF_FIELD,
    PRE_SESSION_COOKIE,
    SESSION_COOKIE,
    NotSignedIn,
    SignedIn,
    SignedInDep,
    agent_of_key,
    check_csrf,
    csrf_token,
    forget_cookie,
    pre_session,
    set_cookie,
)
from nudge.api.relay import RelayDep
from nudge.api.routes.journeys import stop_for_contact
from nudge.errors import Conflict, InvalidInput, NotFound, NudgeError
from nudge.models.db import read_only
from nudge.models.inbox import (
    OPEN_STATUSES,
    Disposition,
    EndRequest,
    NoteCreate,
    PriorityPut,
    ReplyCreate,
    TagsPut,
    TransferRequest,
)
from nudge.models.journeys import EnrollmentPublic, EnrollmentStop
from nudge.models.tables import Contact, FollowUp, Interaction, utcnow
from nudge.runs import inbox
from nudge.runs.inbox import InboxChange
from nudge.runs.outbox import Relay
from nudge.store import interactions
from nudge.store.agents import InboxAgent, queues_page
from nudge.store.directory import get_contact
from nudge.store.journeys import contact_journeys, get_journey, journey_definition_at
from nudge.store.pagination import PageRequest
from nudge.store.records import records_reminding

router = APIRouter(prefix="/inbox", include_in_schema=False)

HERE = FilePath(__file__).resolve().parent
_templates = Environment(
    loader=FileSystemLoader(HERE / "inbox_templates"),
    autoescape=True,  # everything: a contact's `<script>` is shown, never run
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
STATIC_TYPES = {"inbox.css": "text/css; charset=utf-8", "inbox.js": "text/javascript"}
LISTED = 50
WORKFLOWS_SHOWN = 50
QUEUES_SHOWN = 100
SORTS = ("received", "priority", "channel")
STATUSES = ("new", "open", "resolved", "ended")
PRIORITIES = ("low", "normal", "high", "urgent")
# `/inbox/events`: how often it looks, and how long one stream lasts (the browser opens the
# next, which checks the cookie again: a revoked key stops hearing within this).
POLL_SECONDS = 0.5
STREAM_SECONDS = 60.0
Form = Mapping[str, str]
InteractionId = Annotated[str, Path(max_length=32)]
ExternalId = Annotated[str, Path(min_length=1, max_length=200)]


# Responses ----------------------------------------------------------------------------------


def _page(
    name: str, context: dict[str, Any], *, status_code: int = 200, framed: bool = False
) -> HTMLResponse:
    html = _templates.get_template(name).render(**context)
    response = HTMLResponse(html, status_code=status_code)
    # The panel may be framed by pages of the same origin; nothing else may be framed.
    ancestors = "'self'" if framed else "'none'"
    response.headers["Content-Security-Policy"] = (
        f"default-src 'self'; frame-ancestors {ancestors}; form-action 'self'; base-uri 'none'"
    )
    response.headers["X-Frame-Options"] = "SAMEORIGIN" if framed else "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"  # customers' words stay out of caches
    return response


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=status.HTTP_303_SEE_OTHER)


def _error_status(exc: Exception) -> int:
    if isinstance(exc, NotFound):
        return status.HTTP_404_NOT_FOUND
    if isinstance(exc, Conflict):
        return status.HTTP_409_CONFLICT
    if isinstance(exc, HTTPException):
        return exc.status_code
    return status.HTTP_422_UNPROCESSABLE_ENTITY


def _error_text(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors()
        )
    if isinstance(exc, InvalidInput):
        return "; ".join(f"{loc[-1]}: {message}" for loc, message in exc.problems)
    if isinstance(exc, HTTPException):
        return str(exc.detail)
    return str(exc)


async def _not_signed_in(request: Request, _: Exception) -> Response:
    if request.url.path == "/inbox/events":
        return PlainTextResponse("not signed in", status_code=status.HTTP_401_UNAUTHORIZED)
    return _redirect("/inbox/sign-in")


def install(app: FastAPI) -> None:
    """The pages and their answer to a browser without a session."""
    app.add_exception_handler(NotSignedIn, _not_signed_in)
    app.include_router(router)


# Forms --------------------------------------------------------------------------------------


async def _form(request: Request, cookie: str | None) -> Form:
    """The posted fields, once the CSRF token of ``cookie`` is among them (403 otherwise)."""
    raw = await request.form()
    fields = {name: value for name, value in raw.items() if isinstance(value, str)}
    check_csrf(request, cookie, fields.get(CSRF_FIELD))
    if any("\x00" in value for value in fields.values()):
        raise InvalidInput.at(("body",), "a NUL character cannot be stored")
    return fields


def _optional(form: Form, name: str) -> str | None:
    value = form.get(name, "").strip()
    return value or None


def _choice(value: str | None, options: tuple[str, ...]) -> str | None:
    return value if value in options else None


def _local_path(value: str | None, fallback: str) -> str:
    """Where to go back to: a page of the inbox only (never another site)."""
    if value and value.startswith("/inbox/") and "//" not in value and "\\" not in value:
        return value
    return fallback


def _common(signed: SignedIn) -> dict[str, Any]:
    return {"agent": signed.agent, "csrf": signed.csrf, "csrf_field": CSRF_FIELD}


# Sign-in ------------------------------------------------------------------------------------


def _sign_in_page(request: Request, pre: str, error: str | None, status_code: int) -> Response:
    context = {"csrf": csrf_token(request, pre), "csrf_field": CSRF_FIELD, "error": error}
    response = _page("sign_in.html", context, status_code=status_code)
    set_cookie(request, response, PRE_SESSION_COOKIE, pre)
    return response


@router.get("/sign-in")
async def sign_in_form(request: Request) -> Response:
    return _sign_in_page(request, pre_session(request), None, status.HTTP_200_OK)


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    pre = request.cookies.get(PRE_SESSION_COOKIE)
    form = await _form(request, pre)
    key = form.get("key", "").strip()
    try:
        found = await agent_of_key(request, key)
    except HTTPException as exc:  # a real key, but it acts as no agent of the inbox
        return _sign_in_page(request, pre_session(request), str(exc.detail), exc.status_code)
    if found is None:
        error = "Unknown or revoked key. Paste the agent key an admin created for you."
        return _sign_in_page(request, pre_session(request), error, status.HTTP_401_UNAUTHORIZED)
    response = _redirect("/inbox")
    set_cookie(request, response, SESSION_COOKIE, key)
    forget_cookie(request, response, PRE_SESSION_COOKIE)
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    await _form(request, request.cookies.get(SESSION_COOKIE))
    response = _redirect("/inbox/sign-in")
    forget_cookie(request, response, SESSION_COOKIE)
    return response


# Static files -------------------------------------------------------------------------------


@router.get("/static/{name}")
async def static_file(name: str) -> Response:
    media_type = STATIC_TYPES.get(name)
    if media_type is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such file")
    content = (HERE / "inbox_static" / name).read_bytes()
    response = Response(content, media_type=media_type)
    response.headers["Cache-Control"] = "public, max-age=300"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


# The queue ----------------------------------------------------------------------------------


@router.get("")
async def queue_page(
    signed: SignedInDep,
    session: SessionDep,
    queue: Annotated[str | None, Query(max_length=64)] = None,
    status_filter: Annotated[str | None, Query(alias="status", max_length=16)] = None,
    tag: Annotated[str | None, Query(max_length=50)] = None,
    sort: Annotated[str | None, Query(max_length=16)] = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    agent = signed.agent
    chosen = {
        "queue": queue if queue in agent.queues else None,
        "status": _choice(status_filter, STATUSES),
        "tag": (tag or "").strip() or None,
        "sort": _choice(sort, SORTS) or "received",
    }
    items, next_cursor = await interactions.interactions_page(
        session,
        agent.tenant_id,
        agent,
        PageRequest(limit=LISTED, cursor=cursor),
        queue=chosen["queue"],
        status=chosen["status"],  # type: ignore[arg-type]  # one of STATUSES
        tag=chosen["tag"],
        sort=chosen["sort"],  # type: ignore[arg-type]  # one of SORTS
    )
    context = {
        **_common(signed),
        "items": items,
        "next_cursor": next_cursor,
        "chosen": chosen,
        "queues": sorted(agent.queues),
        "statuses": STATUSES,
        "sorts": SORTS,
        "since": await _newest_change(session, agent),
    }
    return _page("queue.html", context)


# An interaction -----------------------------------------------------------------------------


async def _interaction_page(
    signed: SignedIn,
    session: AsyncSession,
    interaction_id: str,
    *,
    error: str | None = None,
    status_code: int = status.HTTP_200_OK,
) -> Response:
    agent = signed.agent
    found = await interactions.get_visible(session, agent.tenant_id, interaction_id, agent)
    contact = await session.get_one(Contact, found.contact_id)
    messages, complete = await interactions.conversation(session, found)
    queues, _ = await queues_page(session, agent.tenant_id, PageRequest(limit=QUEUES_SHOWN))
    context = {
        **_common(signed),
        "it": await interactions.public_of(session, found),
        "messages": messages,
        "complete": complete,
        "notes": await interactions.notes_of(session, agent.tenant_id, contact.id, agent.agent),
        "queues": [queue for queue in queues if queue.slug != found.queue],
        "priorities": PRIORITIES,
        "open_statuses": OPEN_STATUSES,
        "reply_key": uuid.uuid4().hex,  # a double submit of the same form sends once
        "error": error,
        "since": await _newest_change(session, agent),
        "back": f"/inbox/interactions/{found.id}",
        **await _workflows(session, agent, contact),
    }
    return _page("interaction.html", context, status_code=status_code)


@router.get("/interactions/{interaction_id}")
async def interaction_page(
    interaction_id: InteractionId, signed: SignedInDep, session: SessionDep
) -> Response:
    return await _interaction_page(signed, session, interaction_id)


Action = Callable[[Form], Awaitable[InboxChange]]


async def _acted(
    request: Request,
    signed: SignedIn,
    session: AsyncSession,
    relay: Relay,
    interaction_id: str,
    action: Action,
    *,
    done: str | None = None,
) -> Response:
    """Run an agent's action like its API route: commit, relay what it staged, and go
    back to the interaction; a refusal shows on the page, nothing of it written."""
    form = await _form(request, request.cookies.get(SESSION_COOKIE))
    try:
        change = await action(form)
    except (NudgeError, ValidationError) as exc:
        await session.rollback()
        return await _interaction_page(
            signed, session, interaction_id, error=_error_text(exc), status_code=_error_status(exc)
        )
    await session.commit()
    if change.entries:
        await relay.relay_written(change.entries)
    return _redirect(done or f"/inbox/interactions/{change.interaction.id}")


@router.post("/interactions/{interaction_id}/open")
async def open_action(
    interaction_id: InteractionId,
    request: Request,
    signed: SignedInDep,
    session: SessionDep,
    relay: RelayDep,
) -> Response:
    async def act(_: Form) -> InboxChange:
        return await inbox.open_interaction(session, signed.agent, interaction_id, utcnow())

    return await _acted(request, signed, session, relay, interaction_id, act)


@router.post("/interactions/{interaction_id}/reply")
async def reply_action(
    interaction_id: InteractionId,
    request: Request,
    signed: SignedInDep,
    session: SessionDep,
    settings: SettingsDep,
    relay: RelayDep,
) -> Response:
    async def act(form: Form) -> InboxChange:
        body = ReplyCreate.model_validate({"text": form.get("text", "").strip()})
        key = form.get("reply_key", "")
        return await inbox.reply(
            session,
            settings,
            signed.agent,
            interaction_id,
            body.text,
            utcnow(),
            idempotency_key=key if key.isalnum() and len(key) <= 64 else None,
        )

    return await _acted(request, signed, session, relay, interaction_id, act)


@router.post("/interactions/{interaction_id}/resolve")
async def resolve_action(
    interaction_id: InteractionId,
    request: Request,
    signed: SignedInDep,
    session: SessionDep,
    relay: RelayDep,
) -> Response:
    async def act(_: Form) -> InboxChange:
        found = await interactions.for_action(session, signed.agent, interaction_id)
        interactions.resolve(session, found, signed.agent.agent, utcnow())
        return InboxChange(found)

    return await _acted(request, signed, session, relay, interaction_id, act)


@router.post("/interactions/{interaction_id}/transfer")
async def transfer_action(
    interaction_id: InteractionId,
    request: Request,
    signed: SignedInDep,
    session: SessionDep,
    relay: RelayDep,
) -> Response:
    async def act(form: Form) -> InboxChange:
        body = TransferRequest.model_validate({"queue": form.get("queue", "")})
        return await inbox.transfer(session, signed.agent, interaction_id, body.queue, utcnow())

    # Back to the queue: in a queue that is not the agent's, it is no longer theirs to see.
    return await _acted(request, signed, session, relay, interaction_id, act, done="/inbox")


@router.post("/interactions/{interaction_id}/end")
async def end_action(
    interaction_id: InteractionId,
    request: Request,
    signed: SignedInDep,
    session: SessionDep,
    relay: RelayDep,
) -> Response:
    async def act(form: Form) -> InboxChange:
        fields = {name: _optional(form, name) for name in ("case", "related_to", "notes")}
        body = EndRequest(disposition=Disposition.model_validate(fields))
        agent = signed.agent
        found = await interactions.for_action(session, agent, interaction_id, assigned=False)
        interactions.end(session, found, agent.agent, body.disposition, utcnow())
        return InboxChange(found)

    return await _acted(request, signed, session, relay, interaction_id, act)


@router.post("/interactions/{interaction_id}/tags")
async def tags_action(
    interaction_id: InteractionId,
    request: Request,
    signed: SignedInDep,
    session: SessionDep,
    relay: RelayDep,
) -> Response:
    async def act(form: Form) -> InboxChange:
        tags = [tag for tag in form.get("tags", "").split(",") if tag.strip()]
        body = TagsPut.model_validate({"tags": tags})
        agent = signed.agent
        found = await interactions.get_visible(
            session, agent.tenant_id, interaction_id, agent, lock=True
        )
        await interactions.set_tags(session, found, body.tags)
        return InboxChange(found)

    return await _acted(request, signed, session, relay, interaction_id, act)


@router.post("/interactions/{interaction_id}/priority")
async def priority_action(
    interaction_id: InteractionId,
    request: Request,
    signed: SignedInDep,
    session: SessionDep,
    relay: RelayDep,
) -> Response:
    async def act(form: Form) -> InboxChange:
        body = PriorityPut.model_validate({"priority": form.get("priority", "")})
        agent = signed.agent
        found = await interactions.get_visible(
            session, agent.tenant_id, interaction_id, agent, lock=True
        )
        interactions.set_priority(found, body.priority)
        return InboxChange(found)

    return await _acted(request, signed, session, relay, interaction_id, act)


@router.post("/interactions/{interaction_id}/notes")
async def note_action(
    interaction_id: InteractionId,
    request: Request,
    signed: SignedInDep,
    session: SessionDep,
    relay: RelayDep,
) -> Response:
    async def act(form: Form) -> InboxChange:
        body = NoteCreate.model_validate({"text": form.get("text", "").strip()})
        agent = signed.agent
        found = await interactions.get_visible(session, agent.tenant_id, interaction_id, agent)
        interactions.add_note(
            session, agent.tenant_id, found.contact_id, agent.agent, body.text, found.id
        )
        return InboxChange(found)

    return await _acted(request, signed, session, relay, interaction_id, act)


# The contact's workflows ---------------------------------------------------------------------


async def _workflows(session: AsyncSession, agent: InboxAgent, contact: Contact) -> dict[str, Any]:
    """The contact's journeys in progress (each: may agents stop it) and the follow-up
    records reminding them; journeys only for agents whose profile has `journeys`."""
    journeys: list[tuple[EnrollmentPublic, bool]] = []
    if "journeys" in agent.modules:
        items, _ = await contact_journeys(
            session, agent.tenant_id, contact, PageRequest(limit=WORKFLOWS_SHOWN)
        )
        for item in items:
            journey = await get_journey(session, agent.tenant_id, item.journey_id)
            definition = await journey_definition_at(session, journey.id, journey.version)
            journeys.append((item, definition.settings.allow_agents_stop))
    records = []
    for record in (await records_reminding(session, contact.id))[:WORKFLOWS_SHOWN]:
        followup = await session.get_one(FollowUp, record.followup_id)
        records.append((record, followup.name))
    return {"contact": contact, "journeys": journeys, "records": records}


async def _panel_page(
    signed: SignedIn,
    session: AsyncSession,
    external_id: str,
    *,
    error: str | None = None,
    status_code: int = status.HTTP_200_OK,
) -> Response:
    contact = await get_contact(session, signed.agent.tenant_id, external_id)
    context = {
        **_common(signed),
        **await _workflows(session, signed.agent, contact),
        "error": error,
        "back": f"/inbox/contacts/{contact.external_id}/panel",
    }
    return _page("panel.html", context, status_code=status_code, framed=True)


@router.get("/contacts/{external_id}/panel")
async def panel(external_id: ExternalId, signed: SignedInDep, session: SessionDep) -> Response:
    return await _panel_page(signed, session, external_id)


@router.post("/contacts/{external_id}/journeys/{journey_id}/stop")
async def stop_journey(
    external_id: ExternalId,
    journey_id: Annotated[str, Path(max_length=64)],
    request: Request,
    signed: SignedInDep,
    session: SessionDep,
    relay: RelayDep,
) -> Response:
    """Stop the contact's journey as `POST /v1/contacts/{id}/journeys/{id}/stop` does
    (only where the journey allows agents to), with the reason the agent gave."""
    form = await _form(request, request.cookies.get(SESSION_COOKIE))
    back = _local_path(form.get("back"), f"/inbox/contacts/{external_id}/panel")
    try:
        if "journeys" not in signed.agent.modules:
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail="your profile has no journeys")
        body = EnrollmentStop.model_validate(
            {"agent": signed.agent.agent, "reason": form.get("reason")}
        )
        await stop_for_contact(external_id, journey_id, body, signed.principal, session, relay)
    except (NudgeError, ValidationError, HTTPException) as exc:
        await session.rollback()
        return await _panel_page(
            signed, session, external_id, error=_error_text(exc), status_code=_error_status(exc)
        )
    return _redirect(back)


# Live changes -------------------------------------------------------------------------------


async def _newest_change(session: AsyncSession, agent: InboxAgent) -> datetime | None:
    """When an interaction of the agent's queues, or assigned to them, last changed."""
    newest: datetime | None = await session.scalar(
        select(func.max(Interaction.updated_at)).where(
            Interaction.tenant_id == agent.tenant_id,
            or_(Interaction.queue.in_(agent.queues), Interaction.assignee == agent.agent),
        )
    )
    return newest


async def _changes(
    sessions: async_sessionmaker[AsyncSession], agent: InboxAgent, seen: datetime | Unknown | None
) -> AsyncIterator[str]:
    """An event each time ``_newest_change`` moves past what the page last saw: the page
    says what it was rendered with (None: nothing yet), so a change in between is not
    missed; without that, the first look is where changes count from."""
    yield "retry: 1000\n\n"
    last = seen
    ends = time.monotonic() + STREAM_SECONDS
    while time.monotonic() < ends:
        async with read_only(sessions)() as session:
            newest = await _newest_change(session, agent)
        if isinstance(last, Unknown):
            last = newest
        elif newest is not None and (last is None or newest > last):
            stamp = newest.isoformat()
            yield f"id: {stamp}\nevent: changed\ndata: {stamp}\n\n"
            last = newest
        await asyncio.sleep(POLL_SECONDS)


class Unknown:
    """What a page saw, when it did not say."""


NOTHING_YET = "0"  # what a page rendered before any interaction of the agent's says


def _seen(value: str | None) -> datetime | Unknown | None:
    if value == NOTHING_YET:
        return None
    try:
        parsed = datetime.fromisoformat(value) if value else None
    except ValueError:
        parsed = None
    return parsed if parsed is not None and parsed.tzinfo is not None else Unknown()


@router.get("/events")
async def events(
    request: Request,
    signed: SignedInDep,
    since: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Server-sent events: `changed` when an interaction the agent sees changed."""
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    # A reconnecting browser names the last change it heard of.
    seen = _seen(request.headers.get("last-event-id") or since)
    return StreamingResponse(
        _changes(sessions, signed.agent, seen),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
