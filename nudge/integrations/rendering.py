"""Rendering a template of an integration or an attribute, where any failure is final."""

from __future__ import annotations

from typing import Any

from nudge.templating import TemplateProblem, render


def render_template(source: str, context: dict[str, Any]) -> str:
    """``render``, with the Python errors a template can raise ({{ 1 / 0 }}) as TemplateProblem."""
    try:
        return render(source, context)
    except TemplateProblem:
        raise
    except Exception as exc:  # the template's own fault: retrying renders it the same way
        raise TemplateProblem(f"template cannot be rendered: {type(exc).__name__}: {exc}") from None
