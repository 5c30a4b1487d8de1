"""Real servers on 127.0.0.1 for tests: a webhook receiver and an SMTP sink.

Both run in their own threads, so they serve async tests (the event loop stays free)
and plain synchronous code alike. Use them as context managers or through the
``webhook_receiver`` and ``smtp_sink`` fixtures; wait for what they receive with
``tests.utils.waiting`` (``received``, ``eventually``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import ipaddress
import json
import socket
import ssl
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class _Server:
    """Start/stop and the context-manager protocol, shared by both servers."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


# --- webhook receiver -------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """How the receiver answers one request."""

    status: int = 200
    body: str = "ok"
    delay_seconds: float = 0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes  # the raw bytes, as signed by the sender
    json: Any  # the body parsed as JSON, or None when it is not JSON

    @property
    def path_only(self) -> str:
        """The path without its query string (still percent-encoded)."""
        return self.path.split("?", 1)[0]

    @property
    def query(self) -> dict[str, list[str]]:
        """The query string, decoded: name → every value, in order."""
        return urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query, keep_blank_values=True)


class WebhookReceiver(_Server):
    """An HTTP server that records every request (any method) and answers it.

    The answer is, in order of precedence: the next reply queued with ``respond_with``;
    the canned reply for the request's path (``serve`` / ``serve_json``); 200 "ok".
    """

    def __init__(self, host: str = HOST) -> None:
        self._host = host  # any 127.x address: a second "host" on loopback
        self._requests: list[ReceivedRequest] = []
        self._replies: deque[Reply] = deque()
        self._routes: dict[str, Reply] = {}
        self._changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the receiver is not started")
        return f"http://{self._host}:{self._server.server_port}/hook"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``, without a path."""
        if self._server is None:
            raise RuntimeError("the receiver is not started")
        return f"http://{self._host}:{self._server.server_port}"

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._changed:
            return list(self._requests)

    def respond_with(self, *replies: int | Reply) -> None:
        """Answer the next requests with these, in order; then 200 again."""
        with self._changed:
            self._replies.extend(r if isinstance(r, Reply) else Reply(status=r) for r in replies)

    def serve(self, path: str, reply: Reply) -> None:
        """Answer every request for ``path`` (query string ignored) with ``reply``."""
        with self._changed:
            self._routes[path] = reply

    def serve_json(
        self,
        path: str,
        payload: Any,
        *,
        status: int = 200,
        delay_seconds: float = 0,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer every request for ``path`` (query string ignored) with ``payload`` as JSON."""
        self.serve(
            path,
            Reply(
                status=status,
                body=json.dumps(payload),
                delay_seconds=delay_seconds,
                headers={"Content-Type": "application/json", **(headers or {})},
            ),
        )

    def start(self) -> None:
        self._server = ThreadingHTTPServer((self._host, 0), self._handler_class())
        # A short poll interval keeps stop() (and so each test's teardown) fast.
        serve = functools.partial(self._server.serve_forever, poll_interval=0.02)
        threading.Thread(target=serve, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _record(self, request: ReceivedRequest) -> Reply:
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()
            if self._replies:
                return self._replies.popleft()
            return self._routes.get(request.path_only, Reply())

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self._answer()

            do_PUT = do_PATCH = do_GET = do_DELETE = do_POST

            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                reply = receiver._record(
                    ReceivedRequest(
                        method=self.command,
                        path=self.path,
                        headers={name.lower(): value for name, value in self.headers.items()},
                        body=body,
                        json=_parse_json(body),
                    )
                )
                time.sleep(reply.delay_seconds)
                # A client that timed out during the delay has hung up: that is the test's point.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._send(reply)

            def _send(self, reply: Reply) -> None:
                payload = reply.body.encode()
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        return Handler


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


# --- SMTP sink --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes


class _SinkHandler:
    """The aiosmtpd handler: refuses chosen recipients, stores every accepted message."""

    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        refusal = self._sink.refusal_for(address)
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = bytes(envelope.content)
        # Parsed with plain newlines so tests compare text without the wire's CRLFs.
        message = BytesParser(policy=policy.default).parsebytes(raw.replace(b"\r\n", b"\n"))
        self._sink.record(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), message, raw))
        return "250 2.0.0 Ok: queued as NUDGETEST"


class SmtpSink(_Server):
    """An SMTP server (aiosmtpd) on 127.0.0.1 that keeps what it receives.

    ``tls_context`` enables STARTTLS (``require_starttls`` makes it mandatory);
    ``implicit_tls_context`` serves TLS from the first byte (SMTPS, ``security="tls"``);
    ``login`` = (username, password) enables AUTH and accepts only that pair.
    """

    def __init__(
        self,
        *,
        tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        implicit_tls_context: ssl.SSLContext | None = None,
        login: tuple[str, str] | None = None,
    ) -> None:
        self.host = HOST
        self.port = 0
        self._tls_context = tls_context
        self._require_starttls = require_starttls
        self._implicit_tls_context = implicit_tls_context
        self._login = login
        self._messages: list[ReceivedMail] = []
        self._refusals: dict[str, str] = {}
        self._changed = threading.Condition()
        self._controller: Controller | None = None

    @property
    def messages(self) -> list[ReceivedMail]:
        with self._changed:
            return list(self._messages)

    def refuse(self, address: str, reply: str = "550 5.1.1 Mailbox unavailable") -> None:
        """Answer RCPT TO for ``address`` with ``reply`` (a 4xx reply is a temporary refusal)."""
        with self._changed:
            self._refusals[address.lower()] = reply

    def refusal_for(self, address: str) -> str | None:
        with self._changed:
            return self._refusals.get(address.lower())

    def record(self, mail: ReceivedMail) -> None:
        with self._changed:
            self._messages.append(mail)
            self._changed.notify_all()

    def start(self) -> None:
        self.port = free_port()
        self._controller = Controller(
            _SinkHandler(self),
            hostname=self.host,
            port=self.port,
            tls_context=self._tls_context,
            require_starttls=self._require_starttls,
            ssl_context=self._implicit_tls_context,
            authenticator=self._authenticate if self._login else None,
            auth_require_tls=self._tls_context is not None,
        )
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword) and self._login is not None:
            username, password = self._login
            accepted = (
                auth_data.login.decode() == username and auth_data.password.decode() == password
            )
            return AuthResult(success=accepted, handled=False)
        return AuthResult(success=False, handled=False)


# --- TLS --------------------------------------------------------------------------------------


def make_self_signed_cert(directory: Path, hostname: str = "localhost") -> tuple[Path, Path]:
    """Writes ``cert.pem`` and ``key.pem`` valid for ``hostname`` and 127.0.0.1; returns both."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side TLS context for ``SmtpSink(tls_context=...)``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink
