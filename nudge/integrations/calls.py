"""Calling an Integration: one templated HTTP request to a tenant's system.

A plain I/O helper, not an activity: the activities that poll, fetch recipients and run
post-actions call it. Secrets are rendered into requests but never into errors or logs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from collections.abc import Awaitable, Collection, Iterable, Mapping
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, quote_plus

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from nudge.egress import EgressRefused
from nudge.models.followups import template_secrets
from nudge.models.integrations import Integration
from nudge.models.secret_hosts import SecretValues, host_is_allowed, request_host
from nudge.templating import TemplateProblem, render

log = logging.getLogger(__name__)

T = TypeVar("T")

# 408 and 429 ask the caller to come back later; every other 4xx is final.
RETRYABLE_CLIENT_ERRORS = frozenset({408, 429})
# Values shorter than this ("1", "yes") are redacted only where they stand alone (not inside
# a word or number), since hiding every "1" would blank out ordinary text; see ``redact``.
MIN_REDACTED_LENGTH = 4
# The base64 of a value inside a longer string (`user:secret` of basic auth) is recognized
# by the characters only the value decides; fewer than this would match ordinary text.
MIN_EMBEDDED_BASE64 = 6
_BASE64_CHAR = "[A-Za-z0-9+/_-]"
_WORD_CHAR = "A-Za-z0-9"
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
        kind: str = "IntegrationFailed",
    ) -> None:
        self.message = redact(f"integration {integration!r}: {problem}", secrets or {})
        super().__init__(self.message)
        self.integration = integration
        self.retryable = retryable
        self.status = status
        self.kind = kind  # the failure's type in Temporal: `TemplateError` for a template

    def activity_failure(self) -> ApplicationError:
        """This error as an activity's failure: Temporal retries it only when that can help."""
        return ApplicationError(self.message, type=self.kind, non_retryable=not self.retryable)


def redact(text: str, secrets: Mapping[str, str]) -> str:
    """``text`` with every secret value, and its common transformations, replaced by ``***``.

    For each value: the value itself, in any letter case, and its URL-encoded (``quote``,
    ``quote_plus``), JSON-escaped, hex and whitespace-collapsed forms, also in any case
    (``%2f`` and ``%2F``); its base64 (standard and URL-safe, with or without padding);
    and the base64 of any string that holds it (``user:secret`` of basic auth,
    ``secret:``), recognized by the characters only the value decides (and the one
    character either side, which carries a few of its bits) when there are at least
    ``MIN_EMBEDDED_BASE64`` of them.

    A value shorter than ``MIN_REDACTED_LENGTH`` characters is replaced, in the same forms
    but for the embedded base64, only where it stands alone: not right after or before a
    letter or digit (``Bearer 42``, ``token=42`` and ``"42"`` lose it; ``HTTP 420`` and
    ``port 8042`` keep their digits). Such a value is guessed in a few tries anyway: use
    secrets of at least 16 random characters.
    """
    alternatives: dict[str, int] = {}  # regex → length of what it matches, longest first
    for value in secrets.values():
        if not value:
            continue
        short = len(value) < MIN_REDACTED_LENGTH
        for form in _text_forms(value):
            pattern = f"(?i:{re.escape(form)})"
            if short:
                pattern = f"(?<![{_WORD_CHAR}]){pattern}(?![{_WORD_CHAR}])"
            alternatives[pattern] = len(form)
        for form in _base64_forms(value, embedded=not short):
            pattern = re.escape(form)
            if short:
                pattern = f"(?<![{_WORD_CHAR}]){pattern}(?![{_WORD_CHAR}])"
            else:
                pattern = f"{_BASE64_CHAR}?{pattern}{_BASE64_CHAR}?"
            alternatives[pattern] = len(form)
    if not alternatives:
        return text
    # Longest first, so a secret that contains another is replaced whole.
    ordered = sorted(alternatives, key=lambda pattern: alternatives[pattern], reverse=True)
    return re.sub("|".join(ordered), REDACTED, text)


def _text_forms(value: str) -> set[str]:
    forms = {
        value,
        quote(value, safe=""),
        quote(value),
        quote_plus(value),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        value.encode().hex(),
        " ".join(value.split()),  # as excerpts of answers show it
    }
    return {form for form in forms if form}


def _base64_forms(value: str, *, embedded: bool) -> set[str]:
    raw = value.encode()
    forms: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw).decode()
        forms.update((whole, whole.rstrip("=")))
        if not embedded:
            continue
        # After a prefix of k bytes (k = 0, 1, 2 modulo 3), the characters that encode only
        # bits of the value are the same whatever the prefix and what follows.
        for k in range(3):
            encoded = encode(bytes(k) + raw + bytes(3)).decode()
            core = encoded[-(-8 * k // 6) : (8 * (k + len(raw))) // 6]
            if len(core) >= MIN_EMBEDDED_BASE64:
                forms.add(core)
    return {form for form in forms if form}


async def call_integration(
    http: httpx.AsyncClient,
    integration: Integration,
    context: Mapping[str, Any],
    *,
    secrets: Mapping[str, str],
    allowed_hosts: Mapping[str, Collection[str]] | None = None,
    idempotency_key: str | None = None,
) -> Any:
    """Render and send ``integration``; return its response.

    ``idempotency_key`` goes out as the ``Idempotency-Key`` header (unless the integration
    sets that header itself): the caller gives the same key to every retry of one call, so
    a system that honours it does what a retried "approve" asks only once. Without one, a
    call made in an activity sends ``{workflow id}:{activity id}:{integration}``, the same
    on every retry of that activity.

    Templates see ``context`` plus ``secrets``. A secret in ``allowed_hosts`` (name → the
    only hosts it may go to; by default those ``SecretValues`` carry) is sent to no other
    host: the url is rendered first, and when its host is not one of them, a template that
    names the secret is a permanent failure naming secret and host, before anything is
    sent; a template that does not name it does not see it.

    ``query`` values are added to the URL's own query string (a name in both takes the
    ``query`` value). A ``body`` must render to JSON and is sent as ``application/json``.
    The call uses the integration's timeout as a deadline for the whole exchange and follows
    no redirects; it makes one attempt (the client must not retry on its own: Temporal
    retries the activity).

    Success is a status in ``expected_status``, or any 2xx when that is empty. The result is
    the body parsed as JSON whenever it parses (whatever its Content-Type says: many
    systems label JSON ``text/plain``), ``None`` for an empty body, else the body as text.
    A body whose Content-Type says JSON but that does not parse is an error.

    Raises ``IntegrationError``.
    """
    name = integration.name
    if allowed_hosts is None:
        allowed_hosts = secrets.allowed_hosts if isinstance(secrets, SecretValues) else {}
    restricted = {key: hosts for key, hosts in allowed_hosts.items() if key in secrets}
    anywhere = {key: value for key, value in secrets.items() if key not in restricted}
    # The url decides the host: it sees the restricted secrets it names, checked right after.
    templates = {
        **context,
        "secrets": anywhere | _named(secrets, restricted, [integration.url]),
    }

    def fail(problem: str, *, retryable: bool, status: int | None = None) -> IntegrationError:
        return IntegrationError(name, problem, retryable=retryable, status=status, secrets=secrets)

    def rendered(part: str, source: str) -> str:
        try:
            return render(source, templates)
        except TemplateProblem as exc:
            # The same permanent, typed failure as a message template's, in every feature.
            raise IntegrationError(
                name, f"{part}: {exc}", retryable=False, secrets=secrets, kind="TemplateError"
            ) from None

    url = _parse_url(rendered("url", integration.url).strip(), fail)
    host = request_host(url)
    for secret in _named(secrets, restricted, _sources(integration)):
        if not host_is_allowed(host, restricted[secret]):
            allowed = ", ".join(sorted(restricted[secret]))
            raise fail(
                f"secret {secret!r} may go only to {allowed}, not to host {host!r}; "
                "nothing was sent",
                retryable=False,
            )
    templates["secrets"] = anywhere | {
        key: secrets[key] for key, hosts in restricted.items() if host_is_allowed(host, hosts)
    }
    query = {key: rendered(f"query {key!r}", value) for key, value in integration.query.items()}
    url = url.copy_merge_params(query) if query else url
    where = _clip(_where(url), secrets)
    headers = {"Accept": "application/json"}
    if idempotency_key is None:
        idempotency_key = _activity_key(integration)
    if idempotency_key is not None and not any(
        key.lower() == "idempotency-key" for key in integration.headers
    ):
        headers["Idempotency-Key"] = idempotency_key
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

    response = await heartbeating(_send(http, request, integration, where, fail))
    log.debug(
        "integration %r: %s %s answered %d", name, request.method, where, response.status_code
    )
    return _result_or_raise(response, integration, where, secrets, fail)


HEARTBEAT_EVERY = 5.0


async def heartbeating(call: Awaitable[T]) -> T:
    """``call``'s result; meanwhile, inside an activity, a heartbeat every ``HEARTBEAT_EVERY``
    seconds.

    Activities that call providers run with a short heartbeat timeout, so that a killed
    worker is noticed in seconds: a slow provider must not look like a dead worker."""
    if not activity.in_activity():
        return await call
    task = asyncio.ensure_future(call)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_EVERY)
            if done:
                return task.result()
            activity.heartbeat()
    except asyncio.CancelledError:
        task.cancel()
        raise


# --- helpers ----------------------------------------------------------------------------------


def _activity_key(integration: Integration) -> str | None:
    """A key stable across the retries of the calling activity, or None outside one."""
    if not activity.in_activity():
        return None
    info = activity.info()
    return f"{info.workflow_id}:{info.activity_id}:{integration.name}"


def _sources(integration: Integration) -> list[str]:
    """Every template of an integration."""
    sources = [integration.url, *integration.headers.values(), *integration.query.values()]
    return sources if integration.body is None else [*sources, integration.body]


def _named(
    secrets: Mapping[str, str], restricted: Mapping[str, Collection[str]], sources: Iterable[str]
) -> dict[str, str]:
    """The restricted secrets that ``sources`` name, with their values."""
    names = {name for source in sources for name in template_secrets(source)}
    return {name: secrets[name] for name in sorted(names) if name in restricted}


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
