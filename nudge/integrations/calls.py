"""Calling an Integration: one templated HTTP request to a tenant's system.

A plain I/O helper, not an activity: the activities that poll, fetch recipients and run
post-actions call it. Secrets are rendered into requests but never into errors or logs.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import quote, quote_plus

import httpx
from temporalio.exceptions import ApplicationError

from nudge.egress import EgressRefused
from nudge.integrations.rendering import render_template
from nudge.models.integrations import Integration
from nudge.templating import TemplateProblem

log = logging.getLogger(__name__)

# 408 and 429 ask the caller to come back later; every other 4xx is final.
RETRYABLE_CLIENT_ERRORS = frozenset({408, 429})
MIN_REDACTED_LENGTH = 4  # shorter values ("1", "yes") would blank out ordinary text
EXCERPT_CHARS = 200
REDACTED = "***"


class IntegrationError(Exception):
    """An integration call that failed; the message names the integration and never a secret.

    ``retryable`` is True for 5xx, 408, 429, timeouts and connection errors (try again later)
    and False for everything a retry cannot fix (4xx, templates, a body that is not JSON).
    """

    def __init__(
        self,
        integration: str,
        problem: str,
        *,
        retryable: bool,
        status: int | None = None,
        secrets: Mapping[str, str] | None = None,
    ) -> None:
        self.message = redact(f"integration {integration!r}: {problem}", secrets or {})
        super().__init__(self.message)
        self.integration = integration
        self.retryable = retryable
        self.status = status

    def activity_failure(self) -> ApplicationError:
        """This error as an activity's failure: Temporal retries it only when that can help."""
        return ApplicationError(
            self.message, type="IntegrationFailed", non_retryable=not self.retryable
        )


def redact(text: str, secrets: Mapping[str, str]) -> str:
    """``text`` with every secret value longer than 3 characters replaced by ``***``.

    The value's URL-encoded and JSON-escaped forms are replaced too, since a URL or an
    echoed request body may carry the secret in those shapes.
    """
    forms: set[str] = set()
    for value in secrets.values():
        forms.update((value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]))
    # Longest first, so a secret that contains another is replaced whole.
    for form in sorted(forms, key=len, reverse=True):
        if len(form) >= MIN_REDACTED_LENGTH:
            text = text.replace(form, REDACTED)
    return text


async def call_integration(
    http: httpx.AsyncClient,
    integration: Integration,
    context: Mapping[str, Any],
    *,
    secrets: Mapping[str, str],
) -> Any:
    """Render and send ``integration``; return its response.

    Templates see ``context`` plus ``secrets``. ``query`` values are added to the URL's own
    query string (a name in both takes the ``query`` value). A ``body`` must render to JSON
    and is sent as ``application/json``. The call uses the integration's timeout as a
    deadline for the whole exchange and follows no redirects; it makes one attempt (the
    client must not retry on its own: Temporal retries the activity).

    Success is a status in ``expected_status``, or any 2xx when that is empty. The result is
    the body parsed as JSON whenever it parses (whatever its Content-Type says: many
    systems label JSON ``text/plain``), ``None`` for an empty body, else the body as text.
    A body whose Content-Type says JSON but that does not parse is an error.

    Raises ``IntegrationError``.
    """
    name = integration.name
    templates = {**context, "secrets": dict(secrets)}

    def fail(problem: str, *, retryable: bool, status: int | None = None) -> IntegrationError:
        return IntegrationError(name, problem, retryable=retryable, status=status, secrets=secrets)

    def rendered(part: str, source: str) -> str:
        try:
            return render_template(source, templates)
        except TemplateProblem as exc:
            raise fail(f"{part}: {exc}", retryable=False) from None

    url = _parse_url(rendered("url", integration.url).strip(), fail)
    query = {key: rendered(f"query {key!r}", value) for key, value in integration.query.items()}
    url = url.copy_merge_params(query) if query else url
    where = _clip(_where(url), secrets)
    headers = {"Accept": "application/json"}
    for key, source in integration.headers.items():
        value = rendered(f"header {key!r}", source).strip()
        if "\r" in value or "\n" in value:
            raise fail(f"header {key!r} renders to more than one line", retryable=False)
        headers[key] = value
    content: bytes | None = None
    if integration.body is not None:
        body = rendered("body", integration.body)
        try:
            json.loads(body)
        except ValueError as exc:
            # The message gives only the position: the body may hold secrets.
            raise fail(
                f"body does not render to valid JSON ({_position(exc)})", retryable=False
            ) from None
        content = body.encode()
        if not any(key.lower() == "content-type" for key in integration.headers):
            headers["Content-Type"] = "application/json"

    try:
        request = http.build_request(
            integration.method,
            url,
            headers=headers,
            content=content,
            timeout=integration.timeout_seconds,
        )
    except (httpx.HTTPError, ValueError, TypeError) as exc:  # e.g. a header that is not ASCII
        raise fail(f"request cannot be built: {exc}", retryable=False) from None

    response = await _send(http, request, integration, where, fail)
    log.debug(
        "integration %r: %s %s answered %d", name, request.method, where, response.status_code
    )
    return _result_or_raise(response, integration, where, secrets, fail)


# --- helpers ----------------------------------------------------------------------------------


class _Fail(Protocol):
    """The type of ``call_integration``'s ``fail``: builds an error for this integration."""

    def __call__(
        self, problem: str, *, retryable: bool, status: int | None = None
    ) -> IntegrationError: ...


def _parse_url(text: str, fail: _Fail) -> httpx.URL:
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL:
        raise fail("url does not render to a valid URL", retryable=False) from None
    if url.scheme not in ("http", "https") or not url.host:
        raise fail("url does not render to an http(s) URL with a host", retryable=False)
    return url


def _where(url: httpx.URL) -> str:
    """Host, port and path: never the query string or the user info."""
    port = f":{url.port}" if url.port is not None else ""
    return f"{url.host}{port}{url.path}"


async def _send(
    http: httpx.AsyncClient,
    request: httpx.Request,
    integration: Integration,
    where: str,
    fail: _Fail,
) -> httpx.Response:
    timeout = integration.timeout_seconds
    try:
        # httpx's timeout applies per phase; this makes it a deadline for the whole call.
        async with asyncio.timeout(timeout):
            return await http.send(request, follow_redirects=False)
    except EgressRefused as exc:
        raise fail(str(exc), retryable=False) from None
    except (httpx.TimeoutException, TimeoutError):
        raise fail(f"timed out after {timeout:g} s ({where})", retryable=True) from None
    except httpx.LocalProtocolError as exc:
        raise fail(f"request rejected before sending: {exc}", retryable=False) from None
    except httpx.TransportError as exc:
        detail = str(exc) or type(exc).__name__
        raise fail(f"cannot reach {where}: {detail}", retryable=True) from None


def _result_or_raise(
    response: httpx.Response,
    integration: Integration,
    where: str,
    secrets: Mapping[str, str],
    fail: _Fail,
) -> Any:
    status = response.status_code
    expected = integration.expected_status
    if not (status in expected if expected else response.is_success):
        problem = f"HTTP {status} from {where}"
        if expected:
            problem += f" (expected {', '.join(map(str, expected))})"
        if response.is_redirect:
            problem += " (redirects are not followed)"
        excerpt = _clip(" ".join(response.text.split()), secrets)
        if excerpt:
            problem += f": {excerpt}"
        retryable = status >= 500 or status in RETRYABLE_CLIENT_ERRORS
        raise fail(problem, retryable=retryable, status=status)
    if not response.content.strip():
        return None
    try:
        return json.loads(response.content)
    except ValueError:
        if _declares_json(response):
            raise fail(
                f"response is not JSON (HTTP {status} from {where}, "
                f"Content-Type {response.headers['content-type']})",
                retryable=False,
                status=status,
            ) from None
        return response.text


def _declares_json(response: httpx.Response) -> bool:
    media_type = str(response.headers.get("content-type", "")).split(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def _clip(text: str, secrets: Mapping[str, str]) -> str:
    """Redacted, then shortened (in that order, so no part of a secret survives the cut)."""
    text = redact(text, secrets)
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"


def _position(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    return type(exc).__name__
