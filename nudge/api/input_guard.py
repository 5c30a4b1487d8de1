"""Input the database cannot store, or the API could not answer back, is a 422 before a route
runs (`nudge.models.storable`): a NUL character in a path or query parameter or anywhere in
a JSON body, and a JSON body nested deeper than `MAX_DEPTH`. Otherwise each would be a 500,
from PostgreSQL or from serializing what was stored."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from nudge.errors import InvalidInput
from nudge.models.storable import NUL, NUL_MESSAGE, Loc, json_problems

MAX_PROBLEMS = 100


def _query_names(dependant: Dependant) -> Iterator[str]:
    yield from (field.alias for field in dependant.query_params)
    for dependency in dependant.dependencies:
        yield from _query_names(dependency)


async def refuse_unstorable_input(request: Request) -> None:
    """Only what the route reads: an undeclared query parameter or a body it ignores is no
    concern of it."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    problems: list[tuple[Loc, str]] = [
        (("path", name), NUL_MESSAGE)
        for name, value in request.path_params.items()
        if NUL in str(value)
    ]
    for name in _query_names(route.dependant):
        if any(NUL in value for value in request.query_params.getlist(name)):
            problems.append((("query", name), NUL_MESSAGE))
    content_type = request.headers.get("content-type", "")
    if route.body_field is not None and "multipart/" not in content_type:
        # A multipart body (an upload) is read as a form, never as JSON: its parts are
        # checked by the route that reads them.
        try:
            body = await request.json()  # parsed already by FastAPI, when it is JSON
        except (ValueError, RecursionError):
            body = None  # not JSON: FastAPI answers that itself
        problems += json_problems(body, ("body",))
    if problems:
        raise InvalidInput(sorted(problems, key=str)[:MAX_PROBLEMS])
