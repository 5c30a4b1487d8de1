"""The egress policy: where calls made for tenants may go.

Two layers: the address check as a unit (nothing connects anywhere), and the connect path end
to end, only against listeners on loopback.
"""

from __future__ import annotations

import socket

import httpx
import pytest

from nudge.egress import EgressPolicy, EgressRefused, checked_socket, tenant_http_client
from tests.utils.receivers import Reply, WebhookReceiver

PRODUCTION = EgressPolicy.parse("")


@pytest.mark.parametrize(
    ("host", "rule"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("0x7f000001", "loopback"),  # inet_aton's hexadecimal form of 127.0.0.1
        ("2130706433", "loopback"),  # and its decimal form
        ("localhost", "loopback"),
        ("169.254.169.254", "link-local (cloud metadata)"),
        ("10.0.0.1", "private (RFC 1918)"),
        ("172.16.5.4", "private (RFC 1918)"),
        ("192.168.1.1", "private (RFC 1918)"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("fd00::1", "unique-local"),
        ("fe80::1", "link-local (cloud metadata)"),
        ("::ffff:127.0.0.1", "IPv4-mapped IPv6"),
        ("2002:7f00:1::1", "loopback (inside IPv6)"),  # 6to4 wrapping 127.0.0.1
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("192.0.2.1", "not a public"),  # documentation range: not routable
    ],
)
async def test_the_address_check_refuses_every_internal_form(host: str, rule: str) -> None:
    # Numeric forms and `localhost` resolve without any packet leaving the machine.
    with pytest.raises(EgressRefused) as refused:
        await PRODUCTION.resolve(host, 80)
    assert refused.value.rule == rule
    assert rule in str(refused.value) and "NUDGE_EGRESS_ALLOW" in str(refused.value)


def test_public_addresses_pass_the_check_without_connecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def connect(*args: object) -> None:
        raise AssertionError(f"the check connected to {args[1:]}")

    monkeypatch.setattr(socket.socket, "connect", connect)
    for address in ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"):
        # No EgressRefused, and no connection tried: the check only looks at the address.
        assert PRODUCTION.check("example.com", address) is None


def test_the_allow_list_takes_cidrs_and_host_names() -> None:
    policy = EgressPolicy.parse("10.20.0.0/16, itsm.corp.internal, *.lab.internal, ::1")
    policy.check("anything", "10.20.3.4")
    policy.check("itsm.corp.internal", "192.168.7.7")
    policy.check("ITSM.corp.internal.", "192.168.7.7")
    policy.check("a.lab.internal", "10.9.9.9")
    policy.check("x", "::1")
    for host, address in (("other", "10.21.0.1"), ("lab.internal", "10.9.9.9"), ("x", "127.0.0.1")):
        with pytest.raises(EgressRefused):
            policy.check(host, address)


async def _call(policy: EgressPolicy, url: str) -> httpx.Response:
    async with tenant_http_client(policy, follow_redirects=True, timeout=5) as http:
        return await http.get(url)


async def test_production_settings_reach_no_loopback_listener() -> None:
    with WebhookReceiver() as listener:
        port = listener.base_url.rsplit(":", 1)[1]
        for url in (listener.url, f"http://localhost:{port}/hook", f"http://[::1]:{port}/hook"):
            with pytest.raises(EgressRefused):
                await _call(PRODUCTION, url)
        assert listener.requests == []


async def test_a_redirect_to_a_refused_address_is_not_followed() -> None:
    with WebhookReceiver("127.0.0.1") as allowed, WebhookReceiver("127.0.0.2") as refused:
        allowed.serve("/hook", Reply(status=302, headers={"Location": refused.url}))
        with pytest.raises(EgressRefused) as error:
            await _call(EgressPolicy.parse("127.0.0.1/32"), allowed.url)
        assert error.value.address == "127.0.0.2"
        assert len(allowed.requests) == 1
        assert refused.requests == []


async def test_an_allowed_address_is_reached_with_the_name_of_the_url() -> None:
    with WebhookReceiver() as listener:
        port = listener.base_url.rsplit(":", 1)[1]
        response = await _call(EgressPolicy.parse("localhost"), f"http://localhost:{port}/hook")
        assert response.status_code == 200
        (request,) = listener.requests
        assert request.headers["host"] == f"localhost:{port}"


def test_smtp_connections_are_checked_the_same_way() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with pytest.raises(EgressRefused):
            checked_socket(PRODUCTION, "localhost", port, timeout=1)
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()  # no connection is waiting: none was made
        server.setblocking(True)
        with checked_socket(EgressPolicy.parse("127.0.0.0/8"), "127.0.0.1", port, timeout=1):
            connection, _ = server.accept()
            connection.close()
