"""The OpenAPI document: every status an operation can answer, with its body, in one place.

FastAPI documents the success answer and a 422 of its own shape. The errors are added here,
derived from each route: authenticated routes answer 401, and 403 when their role check
leaves out a role; routes with path parameters 404; routes with a body 413 and 422;
mutating routes 409 (unless listed in ``_CANNOT_CONFLICT``). A status a route declares
itself (``responses={429: ...}``) gets the standard body too, and ``_ALSO`` lists what a
route's code answers that its shape does not tell.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from fastapi import FastAPI, routing
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema
from starlette.routing import BaseRoute

from nudge.api import deps
from nudge.api.body_limit import MAX_BODY_BYTES
from nudge.models.storable import MAX_DEPTH
from nudge.store.tenants import ROLES


class ErrorMessage(BaseModel):
    """The body of every error answer but a 422."""

    detail: str = Field(description="What went wrong, for a person to read.")


class ValidationProblem(BaseModel):
    """One field that is wrong."""

    loc: list[str | int] = Field(
        description="Where: `body`, `path`, `query` or `header`, then the field's path as the"
        " client wrote it (keys and list positions).",
        examples=[["body", "members", 2]],
    )
    msg: str = Field(description="What is wrong with it.")
    type: str = Field(description="A machine-readable kind, e.g. `missing`, `value_error`.")


class CsvLineProblem(BaseModel):
    line: int = Field(description="The CSV line (the header is line 1).")
    column: str | None
    reason: str


class ValidationErrors(BaseModel):
    """A 422: every problem found, one per field (the rejected values are never echoed)."""

    detail: list[ValidationProblem]
    problems: list[CsvLineProblem] | None = Field(
        default=None,
        description="An uploaded CSV's problems by line and column (the first 100; `detail`"
        " has the same at `body.file.<line>.<column>`).",
    )
    total: int | None = Field(default=None, description="How many problems the whole CSV has.")


_MB = MAX_BODY_BYTES // 1_000_000

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}

# Status: (description, body model, headers).
_ERRORS: dict[int, tuple[str, type[BaseModel], dict[str, Any]]] = {
    401: (
        "No API key, or one that is unknown or revoked.",
        ErrorMessage,
        {
            "WWW-Authenticate": {
                "description": "`Bearer`: send `Authorization: Bearer <API key>`.",
                "required": True,
                "schema": {"type": "string", "const": "Bearer"},
            }
        },
    ),
    403: ("The key's role may not do this; the detail names the roles that may.", ErrorMessage, {}),
    404: (
        "Not found, or it belongs to another tenant (the two are never told apart).",
        ErrorMessage,
        {},
    ),
    409: (
        "The request contradicts the current state (published, already enrolled, ended, ...);"
        " the detail says how.",
        ErrorMessage,
        {},
    ),
    413: (f"The request body is larger than {_MB} MB; nothing was read.", ErrorMessage, {}),
    422: (
        "The request is not valid: one problem per field, with the field's path. Text with"
        f" a NUL character and JSON nested deeper than {MAX_DEPTH} levels are refused too.",
        ValidationErrors,
        {},
    ),
    429: (
        "Over a rate limit: nothing was done; retry after `Retry-After` seconds.",
        ErrorMessage,
        _RETRY_AFTER,
    ),
    503: (
        "Temporal cannot be reached, so the work was not started; retry after `Retry-After`"
        " seconds.",
        ErrorMessage,
        _RETRY_AFTER,
    ),
}

_MUTATING = {"POST", "PUT", "PATCH", "DELETE"}

# Mutating operations whose code has nothing to refuse as a conflict: upserts (the request is
# the new state), creations without a uniqueness rule, and state changes allowed from every state.
_CANNOT_CONFLICT = {
    "PUT /v1/contacts/{external_id}",
    "PUT /v1/groups/{name}",
    "PUT /v1/channels/{channel_id}",
    "PUT /v1/business-hours/{schedule_id}",
    "PUT /v1/secrets/{name}",
    "DELETE /v1/secrets/{name}",
    "POST /v1/api-keys",
    "DELETE /v1/api-keys/{key_id}",
    "POST /v1/followups",
    "POST /v1/followups/import",
    "PUT /v1/followups/{followup_id}",
    "DELETE /v1/followups/{followup_id}",
    "POST /v1/followups/{followup_id}/activate",
    "POST /v1/followups/{followup_id}/deactivate",
    "POST /v1/followups/{followup_id}/copy",
    "POST /v1/journeys",
    "POST /v1/journeys/import",
    "POST /v1/events/messages",
    "POST /v1/events/assignments",
}

# What a route's code answers that its shape does not tell.
_ALSO: dict[str, set[int]] = {
    # An id in `ids` that is not one of the tenant's follow-ups.
    "GET /v1/followups/export": {404},
    # A button's link that has expired (`_claims`).
    "GET /v1/actions/{token}": {409},
    # Told to Temporal at once (nothing stored to relay later): 503 while it is unreachable.
    "POST /v1/followups/{followup_id}/poll": {503},
    "POST /v1/actions/{token}": {503},
    "POST /v1/deliveries/{delivery_id}/resend": {503},
}


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` document every error answer of every operation."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document_errors(generate(), app.routes)
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def document_errors(schema: dict[str, Any], routes: list[BaseRoute]) -> None:
    """Add the error answers of each route's operations to ``schema``, in place."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    _, definitions = models_json_schema(
        [(model, "serialization") for model in (ErrorMessage, ValidationErrors)],
        ref_template="#/components/schemas/{model}",
    )
    components.update(definitions["$defs"])
    for route in _api_routes(routes):
        for method in sorted(route.methods):
            operation = schema["paths"][route.path_format][method.lower()]
            responses = operation.setdefault("responses", {})
            for code in sorted(error_statuses(route, method, operation)):
                declared = responses.get(str(code), {})
                if "content" in declared and code != 422:
                    continue  # the route's own body for it (FastAPI's 422 is not the API's)
                responses[str(code)] = _response(code, declared)
            operation["responses"] = dict(sorted(responses.items()))
    # FastAPI's own 422 shape (with `input` and `ctx`) is not what the API answers.
    for unused in ("HTTPValidationError", "ValidationError"):
        if f'"#/components/schemas/{unused}"' not in json.dumps(schema["paths"]):
            components.pop(unused, None)


def _api_routes(routes: list[BaseRoute]) -> Iterator[Any]:
    """Every operation's route as the app serves it: with the prefix and dependencies of the
    routers it was included with (FastAPI >= 0.16x keeps included routers nested)."""
    contexts: Iterable[Any] = getattr(routing, "iter_route_contexts", iter)(routes)
    for route in contexts:
        if isinstance(getattr(route, "original_route", route), APIRoute) and (
            route.include_in_schema
        ):
            yield route


def error_statuses(route: Any, method: str, operation: dict[str, Any]) -> set[int]:
    """The error statuses an operation can answer, from the route's shape and declarations."""
    key = f"{method} {route.path_format}"
    calls = list(_calls(route.dependant))
    statuses = {int(code) for code in route.responses if str(code).isdigit()} & set(_ERRORS)
    statuses |= _ALSO.get(key, set())
    if deps._principal in calls:
        statuses.add(401)
        if any(not set(ROLES) <= roles for roles in map(_allowed_roles, calls) if roles):
            statuses.add(403)
    parameters = operation.get("parameters", [])
    if any(p.get("in") == "path" for p in parameters):
        statuses.add(404)
    if parameters:
        statuses.add(422)
    if "requestBody" in operation:
        statuses |= {413, 422}
    if method in _MUTATING and key not in _CANNOT_CONFLICT:
        statuses.add(409)
    return statuses


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            yield dependency.call
        yield from _calls(dependency)


def _allowed_roles(call: Callable[..., Any]) -> set[str] | None:
    """The roles a ``deps.require`` check lets in; None for any other dependency."""
    if getattr(call, "__qualname__", "") != f"{deps.require.__qualname__}.<locals>.check":
        return None
    return set(inspect.getclosurevars(call).nonlocals["allowed"])


def _response(code: int, declared: dict[str, Any]) -> dict[str, Any]:
    description, model, headers = _ERRORS[code]
    response = {
        "description": description,
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
        },
        **({"headers": headers} if headers else {}),
    }
    if declared.get("description") and code != 422:  # FastAPI's 422 says "Validation Error"
        response["description"] = declared["description"]
    return response
