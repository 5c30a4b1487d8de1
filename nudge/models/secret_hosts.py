"""Where a tenant's secrets may go.

Two rules, checked when a follow-up or journey is saved and again when an integration runs:

1. A secret is read only by an integration's ``headers``, ``query`` and ``body``. Anywhere
   else (the integration's ``url``, which ends up in logs, proxies and error texts; a
   message; a set-attribute value; a branch condition) it is refused at save time. A
   template must name the secrets it reads (``secrets.NAME``, ``secrets["NAME"]``,
   ``secrets.get("NAME")``): one that reads ``secrets`` as a whole or by a computed name
   cannot be checked, so it is refused too.
2. A secret stored with ``allowed_hosts`` goes to no other host. At save time the host of
   the integration's url must be written literally and be one of them; at run time the
   rendered request's host must be (``call_integration``), so narrowing a secret's hosts
   later also holds for definitions saved before.

Everything here is pure: the store supplies the secrets' ``allowed_hosts`` from the database.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import httpx
from jinja2 import TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import AfterValidator, Field

from nudge.models.followups import SECRETS, FollowUpDefinition, template_secrets, template_sources
from nudge.models.integrations import Integration, IntegrationAction
from nudge.models.journeys import (
    AssignStep,
    BranchStep,
    HttpRequestStep,
    JourneyDefinition,
    condition_template,
)

Loc = tuple[str | int, ...]

MAX_ALLOWED_HOSTS = 20
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# The scheme and authority of a url template, up to the first literal "/", "?" or "#" (or
# the end): what decides the host, if no template is inside it.
_AUTHORITY = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.-]*://[^/?#]*)(?=[/?#]|\s*$)")
_TEMPLATE_MARKS = ("{{", "{%", "{#")


# Host names ----------------------------------------------------------------------------------


def normalize_host(text: str) -> str:
    """``text`` as an allowed host: lower case, no trailing dot, IPv6 without brackets.

    A host name (ASCII; an international name in its ``xn--`` form) or an IP address; no
    scheme, port, path or wildcard. Raises ``ValueError``.
    """
    host = text.lower().removesuffix(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        pass
    labels = host.split(".")
    if (
        not host
        or len(host) > 253
        or not all(_LABEL.match(label) for label in labels)
        or labels[-1].isdigit()  # 127.1, 10.0.0.300: not a name, and not an address either
    ):
        raise ValueError(
            f"{text!r} is not a host: give the host name or IP address alone, as in "
            "itsm.example.com (no scheme, port, path or wildcard; international names "
            "in their xn-- form)"
        )
    return host


AllowedHost = Annotated[str, Field(max_length=253), AfterValidator(normalize_host)]
AllowedHosts = Annotated[
    list[AllowedHost],
    Field(min_length=1, max_length=MAX_ALLOWED_HOSTS),
    AfterValidator(lambda hosts: list(dict.fromkeys(hosts))),
]
"""The hosts a secret may be sent to (1..20, normalized, duplicates dropped)."""


def request_host(url: httpx.URL) -> str:
    """The host a request goes to, in the form ``normalize_host`` gives allowed hosts."""
    host = url.raw_host.decode("ascii").lower().removesuffix(".")
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host


def literal_host(url_template: str) -> str | None:
    """The host of an integration's url template, or None when a template decides it (or
    the url is not an http(s) URL with a host: it would fail when it runs anyway)."""
    match = _AUTHORITY.match(url_template)
    if match is None or any(mark in match.group(1) for mark in _TEMPLATE_MARKS):
        return None
    try:
        url = httpx.URL(match.group(1).rstrip() + "/")
    except httpx.InvalidURL:
        return None
    if url.scheme not in ("http", "https") or not url.raw_host:
        return None
    return request_host(url)


def host_is_allowed(host: str, allowed: Collection[str]) -> bool:
    return host in allowed


class SecretValues(dict[str, str]):
    """A tenant's secrets, name → plain value, carrying the hosts each restricted one may
    go to, so that whoever is handed the values is handed the restrictions too."""

    def __init__(
        self,
        values: Mapping[str, str] | None = None,
        allowed_hosts: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        super().__init__(values or {})
        self.allowed_hosts: dict[str, frozenset[str]] = {
            name: frozenset(hosts) for name, hosts in (allowed_hosts or {}).items()
        }


# Where a definition uses secrets -----------------------------------------------------------


Place = Literal["integration", "url", "elsewhere"]


@dataclass(frozen=True)
class SecretUse:
    """One secret, read by one template field."""

    loc: Loc  # the field's path in the definition (no "body" prefix)
    name: str  # the secret; "" for a template that reads `secrets` without naming one
    place: Place  # integration headers/query/body; an integration's url; anything else
    url: str | None = None  # the integration's url template (integration and url places)
    host: str | None = None  # its literal host; None when a template decides it


_parser = ImmutableSandboxedEnvironment()


def _named_secret_nodes(tree: nodes.Template) -> set[int]:
    """ids of the ``secrets`` Name nodes read with a literal name (what ``template_secrets``
    reports): ``secrets.NAME``, ``secrets["NAME"]``, ``secrets.get("NAME")``."""
    named: set[int] = set()
    methods: set[int] = set()
    for node in tree.find_all((nodes.Call, nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Call):
            target = node.node
            if isinstance(target, nodes.Getattr) and _is_secrets(target.node):
                methods.add(id(target))
                if (
                    target.attr == "get"
                    and len(node.args) >= 1
                    and isinstance(node.args[0], nodes.Const)
                    and isinstance(node.args[0].value, str)
                ):
                    named.add(id(target.node))
        elif isinstance(node, nodes.Getattr):
            if _is_secrets(node.node) and id(node) not in methods:
                named.add(id(node.node))
        elif (
            isinstance(node, nodes.Getitem)
            and _is_secrets(node.node)
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str)
        ):
            named.add(id(node.node))
    return named


def _is_secrets(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Name) and node.name == SECRETS and node.ctx == "load"


def reads_unnamed_secrets(source: str) -> bool:
    """True when a template reads ``secrets`` other than by a literal name (``{{ secrets }}``,
    ``secrets[key]``, ``secrets.items()``): which secrets it sends cannot be known."""
    try:
        tree = _parser.parse(source)
    except TemplateSyntaxError:
        return False  # refused by validation already
    named = _named_secret_nodes(tree)
    return any(_is_secrets(node) and id(node) not in named for node in tree.find_all(nodes.Name))


def _uses_in(
    loc: Loc, source: str, place: Place, integration: Integration | None
) -> list[SecretUse]:
    url = integration.url if integration is not None else None
    host = literal_host(url) if url is not None else None
    names = template_secrets(source)
    if reads_unnamed_secrets(source):
        names = [*names, ""]
    return [SecretUse(loc, name, place, url, host) for name in dict.fromkeys(names)]


def integration_uses(loc: Loc, integration: Integration) -> Iterator[SecretUse]:
    """The secrets one integration reads, its url's among them (a misplaced use)."""
    yield from _uses_in((*loc, "url"), integration.url, "url", integration)
    for header, source in integration.headers.items():
        yield from _uses_in((*loc, "headers", header), source, "integration", integration)
    for param, source in integration.query.items():
        yield from _uses_in((*loc, "query", param), source, "integration", integration)
    if integration.body is not None:
        yield from _uses_in((*loc, "body"), integration.body, "integration", integration)


def _integration_fields(loc: Loc, integration: Integration) -> Iterator[Loc]:
    yield (*loc, "url")
    yield from ((*loc, "headers", header) for header in integration.headers)
    yield from ((*loc, "query", param) for param in integration.query)
    if integration.body is not None:
        yield (*loc, "body")


def followup_integrations(defn: FollowUpDefinition) -> Iterator[tuple[Loc, Integration]]:
    """Every integration of a follow-up, with its path."""
    for i, integration in enumerate(defn.data_extraction.integrations):
        yield ("data_extraction", "integrations", i), integration
    if defn.recipients.integration is not None:
        yield ("recipients", "integration"), defn.recipients.integration
    post = defn.post_actions
    stages = [
        (("post_actions", "after_each_attempt"), post.after_each_attempt),
        (("post_actions", "after_all_attempts"), post.after_all_attempts),
        *((("button_actions", key), actions) for key, actions in defn.button_actions.items()),
    ]
    for stage, actions in stages:
        for i, action in enumerate(actions):
            if isinstance(action, IntegrationAction):
                yield (*stage, i, "integration"), action.integration


def followup_secret_uses(defn: FollowUpDefinition) -> list[SecretUse]:
    """Every secret a follow-up's templates read, and where."""
    integrations = list(followup_integrations(defn))
    uses = [use for loc, integration in integrations for use in integration_uses(loc, integration)]
    inside = {field for loc, i in integrations for field in _integration_fields(loc, i)}
    for loc, source in template_sources(defn):
        if loc not in inside:  # a template not known to be an integration's: refused
            uses += _uses_in(loc, source, "elsewhere", None)
    return uses


def _strings(value: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*loc, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, (*loc, i))


def journey_secret_uses(defn: JourneyDefinition) -> list[SecretUse]:
    """Every secret a journey's templates read, and where: integrations of `http_request`
    and `assign` steps; every other text of a step (messages, conditions, assignees,
    contact attributes) counts as elsewhere."""
    uses: list[SecretUse] = []
    for i, step in enumerate(defn.steps):
        loc: Loc = ("steps", i)
        data = step.model_dump(mode="json", by_alias=True)
        if isinstance(step, HttpRequestStep | AssignStep) and step.integration is not None:
            uses += integration_uses((*loc, "integration"), step.integration)
            data.pop("integration")
        if isinstance(step, BranchStep):
            for j, branch in enumerate(step.branches):
                source = condition_template(branch.condition)
                uses += _uses_in((*loc, "branches", j, "condition"), source, "elsewhere", None)
            data.pop("branches")
        for where, source in _strings(data, loc):
            uses += _uses_in(where, source, "elsewhere", None)
    return uses


# Problems ------------------------------------------------------------------------------------


def _hosts(hosts: Collection[str]) -> str:
    return ", ".join(sorted(hosts))


def placement_problems(uses: Sequence[SecretUse], prefix: Loc = ("body",)) -> list[tuple[Loc, str]]:
    """A problem for each secret read where secrets may not go."""
    problems: list[tuple[Loc, str]] = []
    for use in uses:
        loc = (*prefix, *use.loc)
        if use.name == "":
            problems.append(
                (
                    loc,
                    "reads `secrets` without naming the secret; name each one "
                    "(secrets.NAME) so where it is sent can be checked",
                )
            )
        elif use.place == "url":
            problems.append(
                (
                    loc,
                    f"secret {use.name!r} in the url: a url is written to logs and error "
                    "texts; send secrets in a header, the query or the body",
                )
            )
        elif use.place == "elsewhere":
            problems.append(
                (
                    loc,
                    f"secret {use.name!r} cannot be used here: secrets go only into an "
                    "integration's headers, query or body",
                )
            )
    return problems


def host_problems(
    uses: Sequence[SecretUse],
    allowed_hosts: Mapping[str, Collection[str] | None],
    prefix: Loc = ("body",),
) -> list[tuple[Loc, str]]:
    """A problem for each secret with ``allowed_hosts`` that an integration would send to
    another host, or to a host written as a template (which cannot be checked)."""
    problems: list[tuple[Loc, str]] = []
    for use in uses:
        hosts = allowed_hosts.get(use.name)
        if use.place != "integration" or hosts is None:
            continue
        loc = (*prefix, *use.loc)
        if use.host is None:
            problems.append(
                (
                    loc,
                    f"secret {use.name!r} may go only to {_hosts(hosts)}, and the host of this "
                    f"integration's url ({use.url!r}) is a template, which cannot be checked; "
                    "write the host in the url",
                )
            )
        elif not host_is_allowed(use.host, hosts):
            problems.append(
                (
                    loc,
                    f"secret {use.name!r} may go only to {_hosts(hosts)}, not to host {use.host!r}",
                )
            )
    return problems


def _destination(use: SecretUse) -> str:
    """The host a use sends its secret to; the url template when a template decides it."""
    return use.host if use.host is not None else f"{use.url} (a templated host)"


def secret_destinations(uses: Sequence[SecretUse]) -> dict[str, list[str]]:
    """Secret name → the hosts its integrations send it to (for an import's report)."""
    found: dict[str, set[str]] = {}
    for use in uses:
        if use.place in ("integration", "url") and use.name:
            found.setdefault(use.name, set()).add(_destination(use))
    return {name: sorted(hosts) for name, hosts in sorted(found.items())}


def unapproved_destinations(
    uses: Sequence[SecretUse], allowed_hosts: Mapping[str, Collection[str] | None]
) -> list[str]:
    """Why a definition written elsewhere must not run here yet: each secret it would send
    to a host that this tenant's secret of that name does not list in ``allowed_hosts``
    (secrets the tenant lacks are reported apart)."""
    reasons: dict[str, None] = {}
    for use in uses:
        if use.place not in ("integration", "url") or use.name not in allowed_hosts:
            continue
        hosts = allowed_hosts[use.name]
        if use.host is None:
            reasons[
                f"sends secret {use.name!r} through a url whose host is a template "
                f"({use.url!r}), which cannot be checked"
            ] = None
        elif hosts is None:
            reasons[
                f"sends secret {use.name!r} to {use.host}; this tenant's secret {use.name!r} "
                f"has no allowed_hosts (PUT /v1/secrets/{use.name} with allowed_hosts "
                f"[{use.host!r}] allows it)"
            ] = None
        elif not host_is_allowed(use.host, hosts):
            reasons[
                f"sends secret {use.name!r} to {use.host}, which this tenant's secret "
                f"{use.name!r} does not allow (allowed: {_hosts(hosts)})"
            ] = None
    return list(reasons)
