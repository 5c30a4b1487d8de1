"""Liveness for load balancers and `nudge dev`."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

from nudge.api.deps import SessionDep, TemporalDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """What the API depends on, and whether each answers."""

    status: Literal["ok", "degraded"]
    database: str = Field(description="`ok`, or `unreachable: <error type>`.")
    temporal: str = Field(description="`ok`, or `unreachable: <error type>`.")


@router.get(
    "/healthz",
    responses={
        200: {"model": Health, "description": "The database and Temporal answer."},
        503: {"model": Health, "description": "The database or Temporal does not answer."},
    },
)
async def healthz(session: SessionDep, temporal: TemporalDep) -> JSONResponse:
    """200 when the database and Temporal answer, 503 naming what does not."""
    checks: dict[str, str] = {}
    try:
        await session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        await asyncio.wait_for(temporal.service_client.check_health(), timeout=5)
        checks["temporal"] = "ok"
    except Exception as exc:
        checks["temporal"] = f"unreachable: {type(exc).__name__}"
    healthy = all(v == "ok" for v in checks.values())
    return JSONResponse(
        status_code=200 if healthy else 503,
        content={"status": "ok" if healthy else "degraded", **checks},
    )
