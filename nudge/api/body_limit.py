"""Request bodies over a size limit are refused with 413 before a route reads them."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 1_000_000


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
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max:
            await self._refuse(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._max:
                    # Raised inside the route's read: the app's handlers answer it as a 413.
                    raise HTTPException(413, detail=self._detail)
            return message

        await self._app(scope, counting_receive, send)

    @property
    def _detail(self) -> str:
        return f"request body over {self._max // 1_000_000} MB"

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        await JSONResponse({"detail": self._detail}, status_code=413)(scope, receive, send)
