"""Per-tenant rate limits on events, sends and poll-now, checked before a route runs.

The counters live in `NUDGE_RATE_LIMIT_STORAGE`: `memory://` counts in this process only
(`nudge dev`), `redis://host:6379` in Redis, so that a limit holds across every API process
sharing it. Moving windows: a limit of 200/second lets through at most 200 requests in any
one-second span, with no burst of twice the limit at a window's edge.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Request, status
from limits import RateLimitItem, parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

from nudge.api.deps import AdminDep, ServiceDep
from nudge.metrics import RATE_LIMIT_REFUSALS, RATE_LIMIT_UNCHECKED, RateLimitScope
from nudge.settings import Settings

log = logging.getLogger(__name__)

# Requests answered 429, per limit name, since the process started; operators scrape the same
# as nudge_rate_limit_refusals_total{scope} (RATE_LIMIT_REFUSALS) from /metrics.
REFUSED: Counter[str] = Counter()
# Requests let through unchecked because the storage did not answer, per limit name; on
# /metrics as nudge_rate_limit_unchecked_total{scope}.
UNCHECKED: Counter[str] = Counter()

# Seconds a Redis storage may take to answer before a request goes unchecked, and seconds
# after that during which requests go unchecked at once, without waiting for it again.
STORAGE_TIMEOUT = 1.0
STORAGE_RETRY = 5.0

RATE_LIMITED: dict[int | str, dict[str, Any]] = {
    status.HTTP_429_TOO_MANY_REQUESTS: {
        "description": "Over the tenant's rate limit: nothing was done; retry after the"
        " `Retry-After` header's seconds.",
    }
}


@dataclass(frozen=True)
class Limit:
    """One limit: its name (the counter's), how much, and what it counts, for the 429."""

    name: RateLimitScope
    item: RateLimitItem
    counts: str
    setting: str

    def describe(self) -> str:
        per = f"{self.item.multiples} {self.item.GRANULARITY.name}s"
        if self.item.multiples == 1:
            per = self.item.GRANULARITY.name
        return f"{self.item.amount} {self.counts} per {per} ({self.setting})"


class RateLimits:
    """The limits of one API process, counted in storage that several processes may share."""

    def __init__(self, settings: Settings) -> None:
        uri = settings.rate_limit_storage.removeprefix("async+")
        self.shared = not uri.startswith("memory:")
        options = (
            {"connect_timeout": STORAGE_TIMEOUT, "stream_timeout": STORAGE_TIMEOUT}
            if self.shared
            else {}
        )
        storage = storage_from_string(f"async+{uri}", wrap_exceptions=True, **options)
        self._limiter = MovingWindowRateLimiter(storage)
        self._prefix = settings.rate_limit_key_prefix
        self._storage_down = False
        self._storage_retry_at = 0.0  # time.monotonic() before which the storage is not asked
        self.events = Limit(
            "events",
            parse(settings.rate_limit_events),
            "events of a tenant",
            "NUDGE_RATE_LIMIT_EVENTS",
        )
        self.notifications = Limit(
            "notifications",
            parse(settings.rate_limit_notifications),
            "notifications of a tenant",
            "NUDGE_RATE_LIMIT_NOTIFICATIONS",
        )
        self.poll = Limit(
            "poll",
            parse(settings.rate_limit_poll),
            "poll-now requests of a follow-up",
            "NUDGE_RATE_LIMIT_POLL",
        )
        if settings.env == "production" and not self.shared:
            log.warning(
                "NUDGE_RATE_LIMIT_STORAGE=%s: each API process counts on its own, so N"
                " processes let through N times each limit; use redis://host:6379",
                settings.rate_limit_storage,
            )

    async def check(self, limit: Limit, *key: str, cost: int = 1) -> None:
        """Count one request (or ``cost`` of them) under `key`; HTTP 429 with `Retry-After`
        when over the limit."""
        retry_after = await self._hit(limit, *key, cost=cost)
        if retry_after is None:
            return
        REFUSED[limit.name] += 1
        RATE_LIMIT_REFUSALS.labels(scope=limit.name).inc()
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"rate limit exceeded: {limit.describe()}; retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )

    async def _hit(self, limit: Limit, *key: str, cost: int = 1) -> int | None:
        """None when the request is let through, else the seconds until one would be."""
        ids = (self._prefix, limit.name, *key)
        if self._storage_down and time.monotonic() < self._storage_retry_at:
            UNCHECKED[limit.name] += 1
            RATE_LIMIT_UNCHECKED.labels(scope=limit.name).inc()
            return None
        try:
            async with asyncio.timeout(STORAGE_TIMEOUT):
                if await self._limiter.hit(limit.item, *ids, cost=cost):
                    self._storage_up()
                    return None
                stats = await self._limiter.get_window_stats(limit.item, *ids)
        except (StorageError, TimeoutError) as exc:
            # Fail open: a rate-limit store that is down must not take the API down with it.
            UNCHECKED[limit.name] += 1
            RATE_LIMIT_UNCHECKED.labels(scope=limit.name).inc()
            self._storage_retry_at = time.monotonic() + STORAGE_RETRY
            if not self._storage_down:
                self._storage_down = True
                error = exc.storage_error if isinstance(exc, StorageError) else "timed out"
                log.warning("rate limits unchecked for now, no answer from storage: %s", error)
            return None
        self._storage_up()
        # When the oldest request in the window leaves it; whole seconds, at least one.
        wait = math.ceil(stats.reset_time - time.time())
        return min(max(wait, 1), limit.item.get_expiry())

    def _storage_up(self) -> None:
        if self._storage_down:
            self._storage_down = False
            log.warning("rate limits checked again, the storage answers")


def _rate_limits(request: Request) -> RateLimits:
    rate_limits: RateLimits = request.app.state.rate_limits
    return rate_limits


RateLimitsDep = Annotated[RateLimits, Depends(_rate_limits)]


async def limit_events(principal: ServiceDep, rate_limits: RateLimitsDep) -> None:
    """`NUDGE_RATE_LIMIT_EVENTS` per tenant, every `/v1/events` route together."""
    await rate_limits.check(rate_limits.events, principal.tenant_id)


async def limit_notifications(principal: ServiceDep, rate_limits: RateLimitsDep) -> None:
    """`NUDGE_RATE_LIMIT_NOTIFICATIONS` per tenant."""
    await rate_limits.check(rate_limits.notifications, principal.tenant_id)


async def limit_poll(
    followup_id: Annotated[str, Path(max_length=64)],
    principal: AdminDep,
    rate_limits: RateLimitsDep,
) -> None:
    """`NUDGE_RATE_LIMIT_POLL` per follow-up: each poll queries the tenant's ITSM or CRM."""
    await rate_limits.check(rate_limits.poll, principal.tenant_id, followup_id)
