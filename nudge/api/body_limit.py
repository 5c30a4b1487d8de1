"""Request bodies over a size limit are refused with 413 before a route reads them."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 1_000_000
# Uploads are larger by nature: a campaign's CSV of a million rows is some 50 MB.
MAX_UPLOAD_BYTES = 100_000_000
UPLOADS = frozenset({("POST", "/v1/campaigns")})


class BodyLimit:
    """ASGI middleware: a declared ``Content-Length`` over the limit is answered 413 at once;
    a body without one is counted as it arrives and cut off at the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self._app = app
        self._max = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        limit = self._limit(scope)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, receive, send, limit)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised inside the route's read: the app's handlers answer it as a 413.
                    raise HTTPException(413, detail=_detail(limit))
            return message

        await self._app(scope, counting_receive, send)

    def _limit(self, scope: Scope) -> int:
        upload = (scope.get("method", ""), scope.get("path", "")) in UPLOADS
        return max(self._max, MAX_UPLOAD_BYTES) if upload else self._max

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        await JSONResponse({"detail": _detail(limit)}, status_code=413)(scope, receive, send)


def _detail(limit: int) -> str:
    return f"request body over {limit // 1_000_000} MB"
