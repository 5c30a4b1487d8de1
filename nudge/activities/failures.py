"""The permanent failures activities raise: a retry cannot fix them, so Temporal does not try."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

TEMPLATE_ERROR = "TemplateError"


def permanent(kind: str, message: str) -> ApplicationError:
    """A non-retryable failure whose ``type`` names what went wrong (shown in the UI)."""
    return ApplicationError(message, type=kind, non_retryable=True)


def template_failure(problem: Exception, where: str = "") -> ApplicationError:
    """A template that cannot render: it renders the same way on every retry."""
    return permanent(TEMPLATE_ERROR, f"{where}: {problem}" if where else str(problem))
