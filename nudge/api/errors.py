"""Domain errors to HTTP answers, in one place."""

from __future__ import annotations

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


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    # FastAPI echoes the rejected value as `input`; it may be a password or a webhook URL.
    assert isinstance(exc, RequestValidationError)
    detail = [{"loc": e["loc"], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return JSONResponse(status_code=422, content={"detail": detail})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(Conflict, _conflict)
    app.add_exception_handler(InvalidInput, _invalid)
    app.add_exception_handler(Unavailable, _unavailable)
