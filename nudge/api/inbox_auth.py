"""Who is signed in to the inbox page, and the CSRF tokens of its forms.

The agent pastes their agent key once; it is kept in an HttpOnly, SameSite=Strict cookie on
`/inbox` (Secure over HTTPS) and checked on every request exactly like an API key: a revoked
key signs the agent out at once. Every form POST carries a token that is an HMAC of the
cookie it was rendered for (the sign-in form: of a random pre-session cookie), keyed with
the app's secret key: a page of another site can neither read it nor forge it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from nudge.api.routes.inbox import acting_agent
from nudge.models.db import read_only, transaction
from nudge.settings import Settings
from nudge.store.agents import InboxAgent
from nudge.store.tenants import Principal, authenticate, note_key_use

PATH = "/inbox"
SESSION_COOKIE = "nudge_inbox"
# Before sign-in there is no session to tie the form's token to: a random value is.
PRE_SESSION_COOKIE = "nudge_inbox_pre"
CSRF_FIELD = "csrf"
MAX_KEY = 200  # far above an `nk_` key's length; anything longer is no key
_PURPOSE = b"nudge inbox csrf\x00"


@dataclass(frozen=True)
class SignedIn:
    """The agent behind the session cookie, and the token their forms carry."""

    principal: Principal
    agent: InboxAgent
    csrf: str


class NotSignedIn(Exception):
    """No valid session: pages send the browser to the sign-in form."""


def _secret(request: Request) -> bytes:
    settings: Settings = request.app.state.settings
    # The newest of the comma-separated keys, as the other signers use.
    return settings.secret_key_value().split(",")[0].strip().encode()


def csrf_token(request: Request, cookie: str) -> str:
    digest = hmac.new(_secret(request), _PURPOSE + cookie.encode(), hashlib.sha256)
    return digest.hexdigest()


def check_csrf(request: Request, cookie: str | None, token: str | None) -> None:
    """403 unless ``token`` is the one of ``cookie``."""
    if (
        not cookie
        or not token
        or not hmac.compare_digest(
            csrf_token(request, cookie).encode(), token.encode("utf-8", "replace")
        )
    ):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail="missing or wrong CSRF token: reload the page"
        )


def _secure(request: Request) -> bool:
    settings: Settings = request.app.state.settings
    return request.url.scheme == "https" or settings.public_url.startswith("https://")


def set_cookie(request: Request, response: Response, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )


def forget_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(
        name, path=PATH, httponly=True, samesite="strict", secure=_secure(request)
    )


def pre_session(request: Request) -> str:
    """The pre-session value of this browser, or a new one (the caller sets the cookie)."""
    return request.cookies.get(PRE_SESSION_COOKIE) or secrets.token_urlsafe(32)


async def agent_of_key(request: Request, key: str) -> SignedIn | None:
    """The agent an agent key acts as; None for an unknown or revoked key. A key that acts
    as no agent (an admin's, an agent's without the inbox) is a 403 naming why."""
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    if not key or len(key) > MAX_KEY or "\x00" in key:
        return None
    async with read_only(sessions)() as session:
        found = await authenticate(session, key)
        if found is None:
            return None
        principal, last_use_is_old = found
        agent = await acting_agent(principal, session, "inbox")
    if last_use_is_old:
        async with transaction(sessions) as own:
            await note_key_use(own, principal)
    return SignedIn(principal, agent, csrf_token(request, key))


async def signed_in(request: Request) -> SignedIn:
    """The dependency of every page behind the sign-in."""
    key = request.cookies.get(SESSION_COOKIE)
    if not key:
        raise NotSignedIn
    try:
        found = await agent_of_key(request, key)
    except HTTPException:  # the key no longer acts as an agent of the inbox
        raise NotSignedIn from None
    if found is None:
        raise NotSignedIn
    return found


SignedInDep = Annotated[SignedIn, Depends(signed_in)]
