"""The egress policy of the suite: every receiver it starts listens on loopback."""

from __future__ import annotations

import httpx

from nudge.egress import EgressPolicy, tenant_http_client

LOOPBACK_ALLOWED = "127.0.0.0/8,::1,localhost"
LOOPBACK = EgressPolicy.parse(LOOPBACK_ALLOWED)


def loopback_http() -> httpx.AsyncClient:
    """The client the worker uses for tenants' traffic, allowed to reach the test receivers."""
    return tenant_http_client(LOOPBACK)
