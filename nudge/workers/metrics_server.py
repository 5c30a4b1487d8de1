"""The worker's `/metrics`: a small HTTP server on `NUDGE_WORKER_METRICS_ADDRESS`.

The worker has no HTTP server of its own, so this one serves the process's registry
(`nudge.metrics`: the Temporal SDK's metrics, the outbox relay's counters) from threads of
its own: a scrape still answers while the event loop is busy, which is when it is wanted.
Loopback by default (`127.0.0.1:9464`); `NUDGE_METRICS_TOKEN`, when set, is required as a
bearer token, as on the API. A port already taken (a second worker on one machine) is logged
and the worker runs without metrics rather than not at all; port 0 takes a free port.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client.exposition import ThreadingWSGIServer
from pydantic import SecretStr

from nudge.metrics import CONTENT_TYPE, render, token_accepts
from nudge.settings import Settings

log = logging.getLogger(__name__)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # every scrape would log a line
        pass


def metrics_app(
    token: SecretStr | None,
) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """The WSGI app: `GET /metrics` answers the registry; anything else 404 or 405."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        def answer(status: str, body: bytes, *headers: tuple[str, str]) -> list[bytes]:
            start_response(status, [("Content-Length", str(len(body))), *headers])
            return [body]

        if environ.get("PATH_INFO") != "/metrics":
            return answer("404 Not Found", b"not found: the metrics are at /metrics\n")
        if environ.get("REQUEST_METHOD") != "GET":
            return answer("405 Method Not Allowed", b"use GET\n", ("Allow", "GET"))
        if not token_accepts(token, environ.get("HTTP_AUTHORIZATION")):
            return answer(
                "401 Unauthorized",
                b"missing or wrong metrics token (NUDGE_METRICS_TOKEN)\n",
                ("WWW-Authenticate", "Bearer"),
            )
        return answer("200 OK", render(), ("Content-Type", CONTENT_TYPE))

    return app


class _ThreadingWSGIServer6(ThreadingWSGIServer):
    address_family = socket.AF_INET6


class MetricsServer:
    """The server, serving from a daemon thread until `stop()`."""

    def __init__(self, host: str, port: int, token: SecretStr | None) -> None:
        server_class = _ThreadingWSGIServer6 if ":" in host else ThreadingWSGIServer
        self._httpd = make_server(
            host, port, metrics_app(token), server_class, handler_class=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="nudge-metrics-server", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        """The port it listens on (the one the kernel chose, for port 0)."""
        port: int = self._httpd.server_address[1]
        return port

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@asynccontextmanager
async def serve_metrics(settings: Settings) -> AsyncIterator[MetricsServer | None]:
    """The worker's `/metrics` while the block runs; None when it is off or cannot listen."""
    bind = settings.worker_metrics_bind
    if bind is None:
        yield None
        return
    host, port = bind
    try:
        server = MetricsServer(host, port, settings.metrics_token)
    except OSError as exc:
        log.warning(
            "worker metrics off: cannot listen on %s (%s); set NUDGE_WORKER_METRICS_ADDRESS",
            settings.worker_metrics_address,
            exc.strerror or exc,
        )
        yield None
        return
    log.info("worker metrics at http://%s:%d/metrics", host, server.port)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)
