"""Where calls made for tenants may go: resolve the host, check every address, connect to
the checked one.

Tenants write URLs (integrations, webhooks, Slack, SMTP hosts). Without a check, a URL such
as ``http://127.0.0.1:8233/api/v1/...`` or ``http://169.254.169.254/`` turns Nudge into a
proxy into its own network. The check runs at connect time on the resolved address, and the
connection is made to that same address, so a name that resolves to a public address when
checked and to a private one a moment later (DNS rebinding) gains nothing. Redirects are new
requests and are checked the same way.

Operators allow more with ``NUDGE_EGRESS_ALLOW`` (CIDRs and host names, comma-separated),
e.g. an on-premises ITSM at ``10.20.0.0/16`` or ``itsm.corp.internal``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Refused address ranges, in the order their names are reported. Anything else that is not a
# globally routable address is refused as "not a public address".
_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("unspecified", ("0.0.0.0/8", "::/128")),
    ("loopback", ("127.0.0.0/8", "::1/128")),
    ("link-local (cloud metadata)", ("169.254.0.0/16", "fe80::/10")),
    ("private (RFC 1918)", ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")),
    ("carrier-grade NAT", ("100.64.0.0/10",)),
    ("unique-local", ("fc00::/7",)),
    ("multicast", ("224.0.0.0/4", "ff00::/8")),
    ("IPv4-mapped IPv6", ("::ffff:0:0/96",)),
)
_NETWORKS: tuple[tuple[str, IPNetwork], ...] = tuple(
    (rule, ipaddress.ip_network(cidr)) for rule, cidrs in _RULES for cidr in cidrs
)
_MAX_REDIRECTS = 5


class EgressRefused(Exception):
    """A call for a tenant to a destination the egress policy does not allow (permanent)."""

    def __init__(self, host: str, address: str, rule: str) -> None:
        where = host if host == address else f"{host} ({address})"
        super().__init__(
            f"outbound call to {where} refused: {rule} address; "
            "an operator can allow it with NUDGE_EGRESS_ALLOW"
        )
        self.host, self.address, self.rule = host, address, rule


def refused_rule(address: IPAddress) -> str | None:
    """The name of the rule that refuses ``address``, or None when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is not None:
            inner = refused_rule(embedded)
            if inner is not None:
                return f"{inner} (inside IPv6)"
    for rule, network in _NETWORKS:
        if address in network:
            return rule
    return None if address.is_global else "not a public"


@dataclass(frozen=True)
class EgressPolicy:
    """What outbound calls may reach beyond public addresses."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, allow: str | Iterable[str]) -> EgressPolicy:
        """From ``NUDGE_EGRESS_ALLOW``: CIDRs or addresses, and host names (``*.corp`` too)."""
        items = allow.split(",") if isinstance(allow, str) else list(allow)
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for raw in (item.strip() for item in items):
            if not raw:
                continue
            try:
                networks.append(ipaddress.ip_network(raw, strict=False))
            except ValueError:
                hosts.add(raw.lower().rstrip("."))
        return cls(networks=tuple(networks), hosts=frozenset(hosts))

    def allows_host(self, host: str) -> bool:
        name = host.lower().rstrip(".")
        return name in self.hosts or any(
            pattern.startswith("*.") and name.endswith(pattern[1:]) for pattern in self.hosts
        )

    def check(self, host: str, address: str) -> None:
        """Raise ``EgressRefused`` unless ``address`` (what ``host`` resolved to) may be reached."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if self.allows_host(host) or any(ip in network for network in self.networks):
            return
        rule = refused_rule(ip)
        if rule is not None:
            raise EgressRefused(host, str(ip), rule)

    async def resolve(self, host: str, port: int) -> str:
        """The first address of ``host`` this policy allows; ``EgressRefused`` when none is."""
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise httpx.ConnectError(f"cannot resolve {host!r}: {exc.strerror}") from None
        refusal: EgressRefused | None = None
        for *_, sockaddr in infos:
            address = str(sockaddr[0])
            try:
                self.check(host, address)
            except EgressRefused as exc:
                refusal = refusal or exc
                continue
            return address
        assert refusal is not None  # getaddrinfo answers at least one address or raises
        raise refusal


class EgressTransport(httpx.AsyncBaseTransport):
    """Sends each request to the address the policy checked, with the original Host header
    and TLS server name, so certificates are verified against the name in the URL."""

    def __init__(self, policy: EgressPolicy, inner: httpx.AsyncBaseTransport) -> None:
        self._policy = policy
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        port = request.url.port or (443 if request.url.scheme == "https" else 80)
        address = await self._policy.resolve(host, port)
        request.url = request.url.copy_with(host=address)
        request.extensions = {**request.extensions, "sni_hostname": host}
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def tenant_http_client(
    policy: EgressPolicy, *, follow_redirects: bool = False, **options: Any
) -> httpx.AsyncClient:
    """The one HTTP client for calls made on behalf of tenants.

    Library retries stay off (every attempt is Temporal's, visible in history). Redirects are
    not followed unless asked for (a tenant's secret header would travel with them); when
    they are, each hop is checked by the policy like the first request.
    """
    inner = httpx.AsyncHTTPTransport(retries=0)
    return httpx.AsyncClient(
        transport=EgressTransport(policy, inner),
        follow_redirects=follow_redirects,
        max_redirects=_MAX_REDIRECTS,
        **options,
    )


def checked_socket(
    policy: EgressPolicy, host: str, port: int, timeout: float | None
) -> socket.socket:
    """A blocking TCP connection to ``host`` at an address the policy allows (for SMTP)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    refusal: EgressRefused | None = None
    for family, kind, proto, _, sockaddr in infos:
        try:
            policy.check(host, str(sockaddr[0]))
        except EgressRefused as exc:
            refusal = refusal or exc
            continue
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
        except OSError:
            sock.close()
            raise
        return sock
    assert refusal is not None
    raise refusal
