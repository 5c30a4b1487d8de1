"""Serving the API with uvicorn (what `nudge api` runs)."""

from __future__ import annotations

import uvicorn

from nudge.api.app import create_app
from nudge.settings import Settings


def serve(settings: Settings) -> None:
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
    )
