"""Domain errors to HTTP answers, in one place."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from temporalio.service import RPCError

from nudge.errors import Conflict, InvalidInput, NotFound, Unavailable

log = logging.getLogger(__name__)

# How the SDK says that a client never reached the server (a lazy client's first call).
NO_CONNECTION = "Failed client connect"


async def _not_found(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=404, content={"detail": str(exc)})


async def _conflict(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=409, content={"detail": str(exc)})


async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=503, content={"detail": str(exc)}, headers={"Retry-After": "5"})


async def _temporal_unreachable(_: Request, exc: Exception) -> JSONResponse:
    # Only the routes that ask Temporal something at once (poll now, a button press, an
    # operator's resend) get here; what the API changes waits in the outbox instead.
    if isinstance(exc, RuntimeError) and not str(exc).startswith(NO_CONNECTION):
        raise exc
    log.warning("Temporal did not answer: %s", exc)
    return JSONResponse(
        status_code=503,
        content={"detail": "Temporal is unreachable; nothing was changed, try again"},
        headers={"Retry-After": "5"},
    )


async def _invalid(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidInput)
    detail = [{"loc": list(loc), "msg": msg, "type": "value_error"} for loc, msg in exc.problems]
    return JSONResponse(status_code=422, content={"detail": detail, **exc.extra})


_DISCRIMINATORS = ("kind", "type")


def _field_path(loc: Sequence[Any], body: Any) -> list[Any]:
    """The location as the client wrote the body: pydantic puts the tag of a discriminated
    union (`card` of `{"kind": "card"}`) into the path, where the client has no such key."""
    path: list[Any] = [loc[0]] if loc else []
    node = body if loc and loc[0] == "body" else None
    rest = list(loc[1:])
    for i, part in enumerate(rest):
        following = rest[i + 1] if i + 1 < len(rest) else None
        if (
            isinstance(node, dict)
            and any(node.get(key) == part for key in _DISCRIMINATORS)
            and (part not in node or following in node)
        ):
            continue
        path.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return path


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    # FastAPI echoes the rejected value as `input`; it may be a password or a webhook URL.
    assert isinstance(exc, RequestValidationError)
    detail = [
        {"loc": _field_path(e["loc"], exc.body), "msg": e["msg"], "type": e["type"]}
        for e in exc.errors()
    ]
    return JSONResponse(status_code=422, content={"detail": detail})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    cause = exc.__cause__
    if exc.status_code == 400 and isinstance(cause, ValueError | RecursionError):
        # FastAPI's 400 for a JSON body it cannot parse for another reason than its syntax
        # (not UTF-8, nested too deep): as malformed as a syntax error, which it answers 422.
        loc: list[str | int] = ["body"]
        if isinstance(cause, UnicodeDecodeError):
            loc.append(cause.start)  # the first byte that is not UTF-8
        msg = "JSON nested too deep" if isinstance(cause, RecursionError) else "JSON decode error"
        detail = [{"loc": loc, "msg": msg, "type": "json_invalid"}]
        return JSONResponse(status_code=422, content={"detail": detail})
    if exc.status_code == 400 and "multipart/" in request.headers.get("content-type", ""):
        # FastAPI's 400 for a multipart body it cannot parse: malformed input like any other.
        detail = [{"loc": ["body"], "msg": "malformed multipart body", "type": "body_invalid"}]
        return JSONResponse(status_code=422, content={"detail": detail})
    return await http_exception_handler(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(Conflict, _conflict)
    app.add_exception_handler(InvalidInput, _invalid)
    app.add_exception_handler(Unavailable, _unavailable)
    app.add_exception_handler(RPCError, _temporal_unreachable)
    app.add_exception_handler(RuntimeError, _temporal_unreachable)
