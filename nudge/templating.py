"""Jinja2 in a sandbox: compiled when a definition is saved, rendered when a message is sent."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

_env = ImmutableSandboxedEnvironment(autoescape=False, keep_trailing_newline=False)


class TemplateProblem(ValueError):
    """A template that does not compile or cannot be rendered."""


@lru_cache(maxsize=4096)
def _compiled(source: str) -> Any:
    return _env.from_string(source)


def check_template(source: str) -> str:
    """Compile ``source`` and return it unchanged; raise ``TemplateProblem`` naming the error."""
    try:
        _compiled(source)
    except TemplateError as exc:
        raise TemplateProblem(f"template does not compile: {exc}") from exc
    return source


def render(source: str, context: dict[str, Any]) -> str:
    try:
        return str(_compiled(source).render(context))
    except TemplateError as exc:
        raise TemplateProblem(f"template cannot be rendered: {exc}") from exc
