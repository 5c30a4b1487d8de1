"""`GET /metrics`: the API process's metrics in the Prometheus text format, for operators.

Not part of the tenants' API: it is left out of the OpenAPI document, takes no API key and
no rate limit. It shows no tenant's data (counts by channel type and status, the Temporal
SDK's figures by workflow type; see `nudge.metrics`), so like `/healthz` it is open unless
`NUDGE_METRICS_TOKEN` is set; then a scrape must send `Authorization: Bearer <token>`.
Where the API is reachable from outside, set the token or keep `/metrics` off the proxy.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, HTTPException, Request, Response, status
from sqlalchemy.exc import SQLAlchemyError

from nudge.api.deps import SessionDep, SettingsDep
from nudge.metrics import CONTENT_TYPE, deliveries_families, render, token_accepts
from nudge.store.metrics import delivery_counts

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

# A scrape answers within this even when the database does not (without the deliveries).
DATABASE_TIMEOUT = 5.0


@router.get("/metrics")
async def metrics(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """Nudge's counters, the deliveries stored by channel type and status, the SDK's metrics."""
    if not token_accepts(settings.metrics_token, request.headers.get("authorization")):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong metrics token (NUDGE_METRICS_TOKEN)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    counts: dict[tuple[str, str], int] | None = None
    try:
        # The request's session: read-only for a GET, so a scrape never takes a write lock.
        async with asyncio.timeout(DATABASE_TIMEOUT):
            counts = await delivery_counts(session)
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        # The rest still answers: the SDK's figures matter most when the database is down.
        log.warning("metrics without deliveries, the database did not answer: %s", exc)
    return Response(render(deliveries_families(counts)), media_type=CONTENT_TYPE)
