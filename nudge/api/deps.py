"""Typed dependencies: the session, the caller, Temporal, settings, the page asked for."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from nudge.models.db import SessionsBeside, read_only, transaction
from nudge.security import SecretBox
from nudge.settings import Settings
from nudge.store.pagination import DEFAULT_LIMIT, MAX_CURSOR_LENGTH, MAX_LIMIT, PageRequest
from nudge.store.tenants import Principal, Role, authenticate, note_key_use

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer nk_…`")


# Requests that only read: their session takes no write lock on SQLite (see `read_only`).
READING_METHODS = frozenset({"GET", "HEAD"})


def _app_sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    return sessions


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    sessions = _app_sessions(request)
    if request.method in READING_METHODS:
        sessions = read_only(sessions)
    async with sessions() as session:
        yield session


def _sessions(
    request: Request, session: Annotated[AsyncSession, Depends(_session)]
) -> async_sessionmaker[AsyncSession]:
    # For work that commits in transactions of its own (enrolling, then starting the run):
    # each of them ends the request session's reading first, or it would wait for it on SQLite.
    return SessionsBeside(_app_sessions(request), session)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _temporal(request: Request) -> Client:
    client: Client = request.app.state.temporal
    return client


def _box(request: Request) -> SecretBox:
    box: SecretBox = request.app.state.box
    return box


SessionDep = Annotated[AsyncSession, Depends(_session)]
SessionsDep = Annotated[async_sessionmaker[AsyncSession], Depends(_sessions)]
SettingsDep = Annotated[Settings, Depends(_settings)]
TemporalDep = Annotated[Client, Depends(_temporal)]
SecretBoxDep = Annotated[SecretBox, Depends(_box)]


async def _principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    # In sessions of its own, each ended before the route runs: the route's session commits
    # only what the route wrote, and no transaction of the check stays open beside it (on
    # SQLite an open transaction holds the write lock, and the route's writes would wait).
    sessions = _app_sessions(request)
    found = None
    if credentials:
        async with read_only(sessions)() as session:
            found = await authenticate(session, credentials.credentials)
    if found is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing, unknown or revoked API key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal, last_use_is_old = found
    if last_use_is_old:
        async with transaction(sessions) as own:
            await note_key_use(own, principal)
    return principal


def require(*roles: Role) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency that lets in admin keys and keys of the given roles."""
    allowed = {"admin", *roles}

    async def check(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
        if principal.role not in allowed:
            needs = " or ".join(sorted(allowed))
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"a {principal.role} key cannot do this; needs {needs}",
            )
        return principal

    return check


AdminDep = Annotated[Principal, Depends(require())]
ServiceDep = Annotated[Principal, Depends(require("service"))]
AgentDep = Annotated[Principal, Depends(require("agent"))]
InboxDep = Annotated[Principal, Depends(require("agent", "service"))]


def paging(default_limit: int = DEFAULT_LIMIT) -> Callable[..., PageRequest]:
    """A dependency that reads a list's `limit` and `cursor` query parameters."""

    def page_request(
        limit: Annotated[
            int, Query(ge=1, le=MAX_LIMIT, description=f"At most this many items (1-{MAX_LIMIT}).")
        ] = default_limit,
        cursor: Annotated[
            str | None,
            Query(
                max_length=MAX_CURSOR_LENGTH,
                description="`next_cursor` of the previous page; omitted for the first page.",
            ),
        ] = None,
    ) -> PageRequest:
        return PageRequest(limit=limit, cursor=cursor)

    return page_request


PageDep = Annotated[PageRequest, Depends(paging())]
