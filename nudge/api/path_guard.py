"""Ids in a path cannot contain "/": an encoded one would be routed as a separator.

Starlette decodes ``%2F`` before routing, so ``GET /v1/contacts/x%2Fmessages`` would answer
contact ``x``'s history instead of contact ``x/messages``. Refused at once, naming why.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send


class EncodedSlashGuard:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") or b""
        if scope["type"] == "http" and b"%2f" in raw.lower():
            refusal = JSONResponse({"detail": "an id in the path cannot contain '/'"}, 404)
            await refusal(scope, receive, send)
            return
        await self._app(scope, receive, send)
