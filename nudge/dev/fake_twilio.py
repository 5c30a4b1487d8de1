"""DEVELOPMENT ONLY: a stand-in for Twilio's Messages API, on 127.0.0.1. Never deployed.

It answers ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` the way Twilio's
references describe, so the SMS channel is exercised against the same refusals:

- the request and answer shapes: twilio/twilio-oai, spec/json/twilio_api_v2010.json
  (operation ``CreateMessage``, schema ``api.v2010.account.message``);
- errors, with Twilio's body ``{"code", "message", "more_info", "status"}``: 20003
  (authentication), 20404 (unknown resource), 21211, 21602, 21603, 21604, 21606, 21609,
  21617, 21619, 21620, 21623, 21701, 21705 (https://www.twilio.com/docs/api/errors/<code>);
- segment counts as Twilio bills them: GSM-7 160 characters alone or 153 per part, UCS-2
  70 alone or 67 per part (https://www.twilio.com/docs/glossary/what-sms-character-limit),
  split the way Twilio's Message Segment Calculator splits them;
- status callbacks and incoming messages as form-encoded POSTs signed with
  ``X-Twilio-Signature`` (the twilio library's ``RequestValidator.compute_signature``),
  with the parameters of "Track the Message Status of Outbound Messages" and "Twilio's
  request to your incoming message Webhook URL".

Unknown parameters are kept in ``FakeSms.params`` and otherwise ignored: the references
list no error for them. Use it as a context
manager, or ``start()`` / ``stop()``; it serves from a background thread, so async tests
and plain scripts can both use it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hmac
import json
import re
import secrets
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import httpx
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

HOST = "127.0.0.1"
API_VERSION = "2010-04-01"
DEFAULT_ACCOUNT_SID = "AC" + "fa4e" + "0" * 28
DEFAULT_AUTH_TOKEN = "fake-twilio-token"
DEFAULT_NUMBERS = ("+15005550006",)
MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Messages\.json$")
E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
MESSAGING_SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")
MAX_BODY = 1600
MAX_MEDIA = 10
MAX_CALLBACK_URL = 4000
CALLBACK_TIMEOUT_SECONDS = 5.0
USER_AGENT = "TwilioProxy/1.1"
# The ErrorCode a callback carries for these statuses when none is given.
DEFAULT_ERROR_CODES = {"undelivered": 30003, "failed": 30008}

# GSM 03.38 (3GPP TS 23.038): the basic table, and the extension table whose characters
# take two septets (an escape and the character).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")
ZWJ = "\u200d"


@dataclass(frozen=True)
class FakeSms:
    """One message the fake accepted."""

    sid: str
    to: str
    from_: str | None  # the From parameter as sent; None with a Messaging Service alone
    body: str
    media_urls: tuple[str, ...]
    status_callback: str | None
    num_segments: int  # as Twilio bills it (the answer says "0" for a Messaging Service)
    messaging_service_sid: str | None
    params: dict[str, list[str]] = field(default_factory=dict)  # every form parameter


@dataclass(frozen=True)
class _Answer:
    status: int
    payload: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class TwilioError(Exception):
    """A refusal, answered with Twilio's error body."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def answer(self) -> _Answer:
        return _Answer(self.status, error_body(self.status, self.code, self.message))


def error_body(status: int, code: int, message: str) -> dict[str, Any]:
    """Twilio's JSON error body, as Twilio's support article on error 20003 quotes it:
    ``{"code": 20003, "message": "Authenticate", "more_info":
    "https://www.twilio.com/docs/errors/20003", "status": 401}``."""
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def segment_count(body: str) -> int:
    """How many SMS segments Twilio bills for ``body``, as Twilio's Message Segment
    Calculator (github.com/TwilioDevEd/message-segment-calculator) counts them.

    GSM-7 when every character is a single character of the GSM 03.38 tables (extension
    characters take two septets), else UCS-2 (counted in UTF-16 units: an emoji takes
    two). A character, with whatever joins it, is never split across segments.
    """
    clusters = graphemes(body)
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in clusters):
        units = [2 if c in GSM7_EXTENSION else 1 for c in clusters]
        single, part = 160, 153
    else:
        units = [len(c.encode("utf-16-le")) // 2 for c in clusters]
        single, part = 70, 67
    if sum(units) <= single:
        return 1
    segments, used = 1, 0
    for unit in units:
        if used and used + unit > part:
            segments, used = segments + 1, 0
        used += unit
    return segments


def graphemes(text: str) -> list[str]:
    """``text`` in user-perceived characters, close enough to Unicode's grapheme clusters
    for counting segments: a character keeps its combining marks, variation selectors,
    emoji modifiers and tags, a zero-width joiner glues two emoji, and two regional
    indicators make one flag."""
    clusters: list[str] = []
    for char in text:
        if clusters and _extends(clusters[-1], char):
            clusters[-1] += char
        else:
            clusters.append(char)
    return clusters


def _extends(cluster: str, char: str) -> bool:
    code = ord(char)
    if cluster.endswith(ZWJ) or char == ZWJ:
        return True
    if unicodedata.category(char) in ("Mn", "Me", "Mc"):
        return True
    if 0xFE00 <= code <= 0xFE0F or 0x1F3FB <= code <= 0x1F3FF or 0xE0020 <= code <= 0xE007F:
        return True
    return len(cluster) == 1 and _regional_indicator(cluster) and _regional_indicator(char)


def _regional_indicator(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def rfc2822(moment: datetime) -> str:
    """E.g. "Thu, 24 Aug 2023 05:01:45 +0000", as Twilio writes dates."""
    return format_datetime(moment.astimezone(UTC).replace(microsecond=0))


class FakeTwilio:
    """Twilio's Messages API for one account, its numbers and an optional Messaging Service.

    ``inbound_url`` is where ``send_sms`` posts (the number's configured webhook).
    ``auto_receipts``: after accepting a message, post a signed status callback for each of
    these statuses in order, from a background thread, to the message's StatusCallback.
    """

    def __init__(
        self,
        *,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        numbers: tuple[str, ...] = DEFAULT_NUMBERS,
        messaging_service_sid: str | None = None,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.numbers = numbers
        self.messaging_service_sid = messaging_service_sid
        self.inbound_url: str | None = None
        self.auto_receipts: tuple[str, ...] = ()
        self._sent: list[FakeSms] = []
        self._failures: deque[TwilioError] = deque()
        self._changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._server = ThreadingHTTPServer((HOST, 0), self._handler_class())
        # A short poll interval keeps stop() (and so each test's teardown) fast.
        serve = functools.partial(self._server.serve_forever, poll_interval=0.02)
        threading.Thread(target=serve, name="fake-twilio", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

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

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``: the channel's ``base_url``."""
        if self._server is None:
            raise RuntimeError("the fake Twilio is not started")
        return f"http://{HOST}:{self._server.server_port}"

    # --- what it received -----------------------------------------------------------------

    @property
    def sent(self) -> list[FakeSms]:
        """The accepted messages, oldest first (a copy)."""
        with self._changed:
            return list(self._sent)

    def wait_for(self, count: int, timeout: float = 10) -> list[FakeSms]:
        """The accepted messages once there are at least ``count`` of them."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._sent) >= count, timeout):
                raise TimeoutError(f"{len(self._sent)} messages accepted, expected {count}")
            return list(self._sent)

    def fail_next(self, http_status: int, code: int, message: str, count: int = 1) -> None:
        """Answer the next ``count`` message requests with this Twilio error."""
        with self._changed:
            self._failures.extend(TwilioError(http_status, code, message) for _ in range(count))

    # --- what it sends ----------------------------------------------------------------------

    def send_status(
        self, sid: str, status: str, *, error_code: int | None = None
    ) -> httpx.Response:
        """Posts a signed status callback for message ``sid``; returns Nudge's answer."""
        sms = self._find(sid)
        if sms.status_callback is None:
            raise ValueError(f"message {sid} was sent without a StatusCallback")
        return self._post_signed(
            sms.status_callback, self._callback_params(sms, status, error_code)
        )

    def send_sms(
        self,
        from_: str,
        body: str,
        *,
        to: str | None = None,
        media_urls: tuple[str, ...] = (),
        profile_name: str | None = None,
    ) -> tuple[httpx.Response, str]:
        """Posts a signed incoming message to ``inbound_url``; returns Nudge's answer and
        the MessageSid. ``from_`` may be ``whatsapp:+…`` (then WaId and ProfileName go too)."""
        if self.inbound_url is None:
            raise RuntimeError("set inbound_url (the number's webhook) first")
        sid = new_sid("MM" if media_urls else "SM")
        params = self._inbound_params(sid, from_, body, to or self.numbers[0], media_urls)
        if from_.startswith("whatsapp:"):
            params["WaId"] = from_.removeprefix("whatsapp:+")
            params["ProfileName"] = profile_name or "Fake Contact"
        return self._post_signed(self.inbound_url, params), sid

    def _find(self, sid: str) -> FakeSms:
        with self._changed:
            for sms in self._sent:
                if sms.sid == sid:
                    return sms
        raise LookupError(f"no message {sid} was sent through the fake Twilio")

    def _callback_params(self, sms: FakeSms, status: str, error_code: int | None) -> dict[str, str]:
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "From": sms.from_ or self.numbers[0],
            "MessageSid": sms.sid,
            "MessageStatus": status,
            "SmsSid": sms.sid,
            "SmsStatus": status,
            "To": sms.to,
        }
        if sms.messaging_service_sid is not None:
            params["MessagingServiceSid"] = sms.messaging_service_sid
        code = error_code if error_code is not None else DEFAULT_ERROR_CODES.get(status)
        if code is not None:
            params["ErrorCode"] = str(code)
        return params

    def _inbound_params(
        self, sid: str, from_: str, body: str, to: str, media_urls: tuple[str, ...]
    ) -> dict[str, str]:
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "Body": body,
            "From": from_,
            "MessageSid": sid,
            "NumMedia": str(len(media_urls)),
            "NumSegments": str(segment_count(body)),
            "SmsMessageSid": sid,
            "SmsSid": sid,
            "SmsStatus": "received",
            "To": to,
        }
        if self.messaging_service_sid is not None:
            params["MessagingServiceSid"] = self.messaging_service_sid
        for index, url in enumerate(media_urls):
            params[f"MediaUrl{index}"] = url
            params[f"MediaContentType{index}"] = "image/jpeg"
        return params

    def _post_signed(self, url: str, params: dict[str, str]) -> httpx.Response:
        signature = RequestValidator(self.auth_token).compute_signature(url, params)
        headers = {"X-Twilio-Signature": str(signature), "User-Agent": USER_AGENT}
        # trust_env off: a proxy from the environment must not see (or reroute) the post.
        with httpx.Client(timeout=CALLBACK_TIMEOUT_SECONDS, trust_env=False) as client:
            return client.post(url, data=params, headers=headers)

    def _send_auto_receipts(self, sms: FakeSms, statuses: tuple[str, ...]) -> None:
        for status in statuses:
            # Nudge being down is its own problem here; Twilio does not retry either.
            with contextlib.suppress(httpx.HTTPError):
                self.send_status(sms.sid, status)

    # --- the Messages API -------------------------------------------------------------------

    def _answer(self, method: str, path: str, headers: Mapping[str, str], raw: bytes) -> _Answer:
        match = MESSAGES_PATH.match(urlsplit(path).path)
        try:
            if method != "POST" or match is None:
                raise TwilioError(404, 20404, f"The requested resource {path} was not found")
            self._authenticate(headers.get("authorization"))
            if match["account"] != self.account_sid:
                raise TwilioError(404, 20404, f"The requested resource {path} was not found")
            self._raise_queued_failure()
            return self._create(_form(headers.get("content-type", ""), raw))
        except TwilioError as error:
            return error.answer()

    def _authenticate(self, authorization: str | None) -> None:
        if not _basic_auth_matches(authorization, self.account_sid, self.auth_token):
            raise TwilioError(401, 20003, "Authenticate")

    def _raise_queued_failure(self) -> None:
        with self._changed:
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            raise failure

    def _create(self, params: dict[str, list[str]]) -> _Answer:
        to = self._recipient(params)
        service = self._service(params)
        from_ = self._sender(params, service, to)
        body = _first(params, "Body") or ""
        media = self._media(params)
        if not body and not media:
            if service is not None:
                raise TwilioError(
                    400, 21619, "A Message Body, Media URL or Content SID is required"
                )
            raise TwilioError(400, 21602, "Message body is required.")
        if len(body) > MAX_BODY:
            raise TwilioError(
                400, 21617, "The concatenated message body exceeds the 1600 character limit."
            )
        sms = FakeSms(
            sid=new_sid("MM" if media else "SM"),
            to=to,
            from_=from_,
            body=body,
            media_urls=media,
            status_callback=self._status_callback(params),
            # An MMS is one message, whatever its text (spec example createScheduledMessageMms).
            num_segments=1 if media else segment_count(body),
            messaging_service_sid=service,
            params=params,
        )
        self._record(sms)
        return _Answer(201, self._resource(sms), {"Twilio-Request-Id": new_sid("RQ")})

    def _recipient(self, params: dict[str, list[str]]) -> str:
        to = _first(params, "To")
        if not to:
            raise TwilioError(400, 21604, "A 'To' phone number is required.")
        if not E164.match(to) or to in self.numbers:
            raise TwilioError(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        return to

    def _service(self, params: dict[str, list[str]]) -> str | None:
        service = _first(params, "MessagingServiceSid")
        if service is None:
            return None
        if not MESSAGING_SERVICE_SID.match(service):
            raise TwilioError(400, 21705, "The Messaging Service is invalid")
        if service != self.messaging_service_sid:
            raise TwilioError(400, 21701, "The Messaging Service does not exist")
        return service

    def _sender(self, params: dict[str, list[str]], service: str | None, to: str) -> str | None:
        # With a Messaging Service, From may be left out (a sender of its pool is picked)
        # or name one of the pool (spec, CreateMessageRequest.From).
        from_ = _first(params, "From")
        if from_ is None:
            if service is None:
                raise TwilioError(
                    400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required"
                )
            return None
        if from_ not in self.numbers:
            raise TwilioError(
                400,
                21606,
                "The 'From' phone number provided is not a valid message-capable Twilio"
                " phone number for this destination/account",
            )
        return from_

    def _media(self, params: dict[str, list[str]]) -> tuple[str, ...]:
        media = tuple(url for url in params.get("MediaUrl", []) if url)
        if len(media) > MAX_MEDIA:
            raise TwilioError(400, 21623, "Number of media files exceeds allowed limit")
        if not all(_web_url(url) for url in media):
            raise TwilioError(400, 21620, "Invalid media URL(s)")
        return media

    def _status_callback(self, params: dict[str, list[str]]) -> str | None:
        url = _first(params, "StatusCallback")
        if url is None:
            return None
        host = urlsplit(url).hostname or ""
        # "URL must contain a valid hostname and underscores are not allowed" (spec).
        if len(url) > MAX_CALLBACK_URL or not _web_url(url) or "_" in host:
            raise TwilioError(400, 21609, "Invalid 'StatusCallback'")
        return url

    def _record(self, sms: FakeSms) -> None:
        with self._changed:
            self._sent.append(sms)
            self._changed.notify_all()

    def _resource(self, sms: FakeSms) -> dict[str, Any]:
        """The Message resource as created (schema ``api.v2010.account.message``)."""
        now = rfc2822(datetime.now(UTC))
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sms.sid}"
        # A Messaging Service's message starts `accepted`, and its num_segments is "0" until
        # a sender is picked (spec, `num_segments`; "Outbound Message Status in Status
        # Callbacks").
        service = sms.messaging_service_sid is not None
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": sms.body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sms.from_,
            "messaging_service_sid": sms.messaging_service_sid,
            "num_media": str(len(sms.media_urls)),
            "num_segments": "0" if service else str(sms.num_segments),
            "price": None,
            "price_unit": None,
            "sid": sms.sid,
            "status": "accepted" if service else "queued",
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": sms.to,
            "uri": f"{uri}.json",
        }

    def _after_answer(self, answer: _Answer) -> None:
        """Starts the automatic receipts once the API answer has left, as Twilio would."""
        statuses = self.auto_receipts
        if answer.status != 201 or not statuses:
            return
        sms = self._find(str(answer.payload["sid"]))
        if sms.status_callback is not None:
            threading.Thread(
                target=self._send_auto_receipts, args=(sms, statuses), daemon=True
            ).start()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {name.lower(): value for name, value in self.headers.items()}
                answer = fake._answer(self.command, self.path, headers, raw)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._send(answer)
                fake._after_answer(answer)

            do_GET = do_PUT = do_PATCH = do_DELETE = do_POST

            def _send(self, answer: _Answer) -> None:
                payload = json.dumps(answer.payload).encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                if answer.status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="Twilio API"')
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test and dev output quiet

        return Handler


def _form(content_type: str, raw: bytes) -> dict[str, list[str]]:
    """The form parameters; a body that is not form-encoded (JSON, say) carries none, which
    is why Twilio answers a JSON request with 21604 (https://www.twilio.com/docs/errors/21604)."""
    if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        return {}
    try:
        return parse_qs(raw.decode(), keep_blank_values=True)
    except UnicodeDecodeError:
        return {}


def _first(params: dict[str, list[str]], name: str) -> str | None:
    """The parameter's first value; an empty one counts as absent."""
    values = params.get(name) or [""]
    return values[0] or None


def _web_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _basic_auth_matches(authorization: str | None, username: str, password: str) -> bool:
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    given_user, _, given_password = decoded.partition(":")
    # Compared in constant time, both parts always, so timing says nothing about either.
    user_ok = hmac.compare_digest(given_user.encode(), username.encode())
    password_ok = hmac.compare_digest(given_password.encode(), password.encode())
    return user_ok and password_ok


def main() -> None:
    """Runs the fake in the foreground: ``python -m nudge.dev.fake_twilio``."""
    with FakeTwilio() as fake:
        print(f"fake Twilio on {fake.base_url}")
        print(f"  account_sid {fake.account_sid}  auth_token {fake.auth_token}")
        print(f"  from {', '.join(fake.numbers)}")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":
    main()
