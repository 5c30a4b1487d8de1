"""Domain errors to HTTP answers, in one place."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from nudge.errors import Conflict, InvalidInput, NotFound, Unavailable


async def _not_found(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=404, content={"detail": str(exc)})


async def _conflict(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=409, content={"detail": str(exc)})


async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=503, content={"detail": str(exc)}, headers={"Retry-After": "5"})


async def _invalid(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidInput)
    detail = [{"loc": list(loc), "msg": msg, "type": "value_error"} for loc, msg in exc.problems]
    return JSONResponse(status_code=422, content={"detail": detail})


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


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(Conflict, _conflict)
    app.add_exception_handler(InvalidInput, _invalid)
    app.add_exception_handler(Unavailable, _unavailable)
