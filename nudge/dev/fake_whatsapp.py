"""DEVELOPMENT ONLY: a fake WhatsApp Cloud API on 127.0.0.1, for tests and `nudge dev`.

It answers the two calls Nudge makes as the Cloud API does, and refuses what the Cloud API
refuses, with the same Graph error bodies:

- ``POST /{version}/{phone_number_id}/messages`` (text, image, interactive button and list,
  template), checked against Meta's references: the ``sendMessage`` operation and its
  examples in ``business-messaging-api_v23.0.yaml`` (github.com/facebook/openapi) and the
  limits of the messages guides (text body 4096; interactive body 1024, header and footer
  text 60, reply buttons 1 to 3 with id ≤ 256 and distinct titles ≤ 20; list button ≤ 20,
  sections 1 to 10, rows 1 to 10 in all with id ≤ 200, title ≤ 24, description ≤ 72, a text-only
  header; template name and ``language.code`` required). A wrong token answers 401, code
  190; anything else wrong answers 400, ``(#100) Invalid parameter`` with the field in
  ``error_data.details``.
- ``GET /{version}/{phone_number_id}?fields=quality_rating,messaging_limit_tier``.

The other way, it posts what Meta posts to a business's webhook (the messages webhook
reference): delivery receipts for what it accepted (``auto_receipts``, or ``send_status``),
a contact's text (``send_text``) and button presses (``press_button``), each signed
``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body with the app secret>``.

Those posts are synchronous: call them from a thread (``asyncio.to_thread``) when the
webhook receiver runs on the caller's event loop. Run it alone with
``python -m nudge.dev.fake_whatsapp --port 8455 --webhook-url http://127.0.0.1:8000/...``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import hashlib
import hmac
import json
import logging
import queue
import re
import secrets
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import httpx

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
WABA_ID = "102290129340398"
DISPLAY_PHONE_NUMBER = "15550783881"
WEBHOOK_TIMEOUT_SECONDS = 5.0
ERROR_CODES_URL = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"
SUPPORTED_TYPES = ("text", "image", "interactive", "template")
ENVELOPE = frozenset(
    {"messaging_product", "recipient_type", "to", "type", "context", "biz_opaque_callback_data"}
)
PHONE_FIELDS = frozenset(
    {
        "id",
        "display_phone_number",
        "verified_name",
        "quality_rating",
        "messaging_limit_tier",
        "code_verification_status",
        "platform_type",
        "throughput",
    }
)
DEFAULT_PHONE_FIELDS = ("verified_name", "display_phone_number", "quality_rating", "id")

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class FakeMessage:
    """One message the fake accepted."""

    wamid: str
    to: str
    type: str
    body: JsonObject  # the request's JSON, as sent


class GraphError(Exception):
    """An error the fake answers with, in Graph's shape."""

    def __init__(
        self,
        http_status: int,
        code: int,
        message: str,
        *,
        error_type: str = "OAuthException",
        details: str | None = None,
        subcode: int | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status, self.code, self.message = http_status, code, message
        self.error_type, self.details, self.subcode = error_type, details, subcode

    def body(self) -> JsonObject:
        error: JsonObject = {"message": self.message, "type": self.error_type, "code": self.code}
        if self.details is not None:
            error["error_data"] = {"messaging_product": "whatsapp", "details": self.details}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        error["fbtrace_id"] = _trace_id()
        return {"error": error}


def invalid(field: str, problem: str) -> GraphError:
    """What Meta answers for a request that breaks the schema: 400, code 100."""
    return GraphError(400, 100, "(#100) Invalid parameter", details=f"Param {field} {problem}")


def bad_token() -> GraphError:
    return GraphError(401, 190, "Invalid OAuth access token - Cannot parse access token")


class FakeWhatsApp:
    """The fake Cloud API: a real HTTP server on 127.0.0.1, in a background thread."""

    def __init__(
        self,
        *,
        phone_number_id: str = "106540352242922",
        access_token: str = "fake-wa-token",
        app_secret: str = "fake-app-secret",
        api_version: str = "v21.0",
        port: int = 0,
    ) -> None:
        self.phone_number_id = phone_number_id
        self.access_token = access_token
        self.app_secret = app_secret
        self.api_version = api_version
        self.waba_id = WABA_ID
        self.display_phone_number = DISPLAY_PHONE_NUMBER
        # Where the fake posts webhooks (Nudge's webhook URL for the channel).
        self.webhook_url: str | None = None
        # Statuses posted, in order, for every accepted message, e.g. ("sent", "delivered").
        self.auto_receipts: tuple[str, ...] = ()
        # Served on GET /{version}/{phone_number_id}.
        self.quality_rating = "GREEN"
        self.messaging_limit_tier = "TIER_1K"
        self._port = port
        self._sent: list[FakeMessage] = []
        self._failures: deque[GraphError] = deque()
        self._changed = threading.Condition()
        self._receipts: queue.Queue[str | None] = queue.Queue()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._server = ThreadingHTTPServer((HOST, self._port), _handler(self))
        # A short poll interval keeps stop() (and each test's teardown) fast.
        serve = functools.partial(self._server.serve_forever, poll_interval=0.02)
        self._threads = [
            threading.Thread(target=serve, name="fake-whatsapp", daemon=True),
            threading.Thread(target=self._post_receipts, name="fake-whatsapp-hooks", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        self._receipts.put(None)
        for thread in self._threads:
            thread.join(timeout=WEBHOOK_TIMEOUT_SECONDS + 1)
        self._threads = []

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
        """``http://127.0.0.1:<port>``: a channel's ``base_url``."""
        if self._server is None:
            raise RuntimeError("the fake WhatsApp is not started")
        return f"http://{HOST}:{self._server.server_port}"

    # --- what it received ---------------------------------------------------------------------

    @property
    def sent(self) -> list[FakeMessage]:
        """Every accepted message, oldest first (a copy)."""
        with self._changed:
            return list(self._sent)

    def wait_for(self, count: int, timeout: float = 10) -> list[FakeMessage]:
        """The accepted messages once there are at least ``count``; ``TimeoutError`` if not."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._sent) >= count, timeout):
                raise TimeoutError(f"{len(self._sent)} of {count} WhatsApp messages arrived")
            return list(self._sent)

    def fail_next(self, http_status: int, code: int, message: str, count: int = 1) -> None:
        """Answer the next ``count`` sends with this Graph error (after the token check)."""
        errors = [GraphError(http_status, code, message, details=message) for _ in range(count)]
        with self._changed:
            self._failures.extend(errors)

    # --- webhooks it posts --------------------------------------------------------------------

    def send_status(
        self,
        wamid: str,
        status: str,
        *,
        error_code: int | None = None,
        error_title: str = "Message undeliverable.",
        error_details: str | None = None,
    ) -> httpx.Response:
        """Post a status webhook for ``wamid``; a ``failed`` one carries an error
        (131026 unless ``error_code`` says otherwise). Returns Nudge's answer."""
        entry: JsonObject = {
            "id": wamid,
            "status": status,
            "timestamp": str(int(time.time())),
            "recipient_id": self._recipient_of(wamid),
        }
        if status == "sent":
            entry["pricing"] = {"billable": True, "pricing_model": "PMP", "category": "utility"}
        if status == "failed" or error_code is not None:
            entry["errors"] = [
                _webhook_error(error_code or 131026, error_title, error_details or error_title)
            ]
        return self.post_value({"statuses": [entry]})

    def send_text(
        self, from_wa_id: str, text: str, *, name: str = "Ada"
    ) -> tuple[httpx.Response, str]:
        """Post a contact's text message; returns Nudge's answer and the message's wamid."""
        return self._post_inbound(from_wa_id, name, {"type": "text", "text": {"body": text}})

    def press_button(
        self,
        from_wa_id: str,
        payload: str,
        title: str,
        *,
        interactive: bool = False,
        name: str = "Ada",
    ) -> tuple[httpx.Response, str]:
        """Post a press: of a template's quick-reply button (``button``), or with
        ``interactive`` of a reply button (``interactive.button_reply``). The press names the
        last message sent to the contact as its context, as WhatsApp does."""
        if interactive:
            content: JsonObject = {
                "type": "interactive",
                "interactive": {
                    "type": "button_reply",
                    "button_reply": {"id": payload, "title": title},
                },
            }
        else:
            content = {"type": "button", "button": {"payload": payload, "text": title}}
        last = self._last_sent_to(from_wa_id)
        if last is not None:
            content["context"] = {"from": self.display_phone_number, "id": last.wamid}
        return self._post_inbound(from_wa_id, name, content)

    def post_value(self, value: JsonObject) -> httpx.Response:
        """Post one ``messages`` change with this ``value`` (metadata added), signed."""
        document = {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": self.waba_id,
                    "changes": [
                        {
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": self.display_phone_number,
                                    "phone_number_id": self.phone_number_id,
                                },
                                **value,
                            },
                            "field": "messages",
                        }
                    ],
                }
            ],
        }
        # Meta signs the body as sent, with non-ASCII characters escaped.
        return self.post_signed(json.dumps(document).encode())

    def post_signed(self, body: bytes) -> httpx.Response:
        """POST ``body`` to ``webhook_url`` with Meta's signature header."""
        if self.webhook_url is None:
            raise RuntimeError("set webhook_url before the fake WhatsApp posts webhooks")
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": self.sign(body)}
        with httpx.Client(timeout=WEBHOOK_TIMEOUT_SECONDS) as client:
            return client.post(self.webhook_url, content=body, headers=headers)

    def sign(self, body: bytes) -> str:
        digest = hmac.new(self.app_secret.encode(), body, hashlib.sha256).hexdigest()
        return f"sha256={digest}"

    def _post_inbound(
        self, from_wa_id: str, name: str, content: JsonObject
    ) -> tuple[httpx.Response, str]:
        wamid = new_wamid(from_wa_id)
        message = {"from": from_wa_id, "id": wamid, "timestamp": str(int(time.time())), **content}
        contact = {"profile": {"name": name}, "wa_id": from_wa_id}
        return self.post_value({"contacts": [contact], "messages": [message]}), wamid

    def _post_receipts(self) -> None:
        """The background poster of ``auto_receipts``: one at a time, in order."""
        while (wamid := self._receipts.get()) is not None:
            for status in self.auto_receipts:
                try:
                    self.send_status(wamid, status)
                except (httpx.HTTPError, RuntimeError) as exc:
                    log.warning("fake WhatsApp could not post %s for %s: %r", status, wamid, exc)

    def _recipient_of(self, wamid: str) -> str:
        with self._changed:
            return next((m.to for m in self._sent if m.wamid == wamid), "")

    def _last_sent_to(self, wa_id: str) -> FakeMessage | None:
        with self._changed:
            return next((m for m in reversed(self._sent) if m.to == wa_id), None)

    # --- the API ------------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> JsonObject:
        """One request's answer; raises ``GraphError`` for a refusal."""
        path, query = _split(target)
        self._check_token(headers)
        version, node, edge = _path_parts(path)
        self._check_node(version, node, path)
        if method == "GET" and edge is None:
            return self._phone_number(query)
        if method == "POST" and edge == "messages":
            return self._accept(headers, body)
        raise GraphError(
            400,
            100,
            f"Unsupported {method.lower()} request.",
            error_type="GraphMethodException",
            subcode=33,
        )

    def _check_token(self, headers: dict[str, str]) -> None:
        given = headers.get("authorization", "")
        expected = f"Bearer {self.access_token}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise bad_token()

    def _check_node(self, version: str, node: str, path: str) -> None:
        if version != self.api_version:
            raise GraphError(400, 2500, f"Unknown path components: {path}")
        if node != self.phone_number_id:
            raise GraphError(
                400,
                100,
                f"Unsupported request. Object with ID '{node}' does not exist, cannot be loaded"
                " due to missing permissions, or does not support this operation.",
                error_type="GraphMethodException",
                subcode=33,
            )

    def _phone_number(self, query: dict[str, list[str]]) -> JsonObject:
        fields = [f for f in ",".join(query.get("fields", [])).split(",") if f] or list(
            DEFAULT_PHONE_FIELDS
        )
        unknown = [f for f in fields if f not in PHONE_FIELDS]
        if unknown:
            raise GraphError(
                400,
                100,
                f"(#100) Tried accessing nonexisting field ({unknown[0]}) on node type"
                " (WhatsAppBusinessPhoneNumber)",
            )
        node = self._phone_node()
        return {name: node[name] for name in [*fields, "id"] if name in node}

    def _phone_node(self) -> JsonObject:
        return {
            "id": self.phone_number_id,
            "display_phone_number": self.display_phone_number,
            "verified_name": "Nudge Dev",
            "quality_rating": self.quality_rating,
            "messaging_limit_tier": self.messaging_limit_tier,
            "code_verification_status": "VERIFIED",
            "platform_type": "CLOUD_API",
            "throughput": {"level": "STANDARD"},
        }

    def _accept(self, headers: dict[str, str], body: bytes) -> JsonObject:
        with self._changed:
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            raise failure
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type != "application/json":
            raise invalid("Content-Type", "must be application/json")
        request = _parse_json(body)
        check_message(request)
        to = request["to"]
        message = FakeMessage(wamid=new_wamid(to), to=to, type=request["type"], body=request)
        with self._changed:
            self._sent.append(message)
            self._changed.notify_all()
        if self.auto_receipts:
            self._receipts.put(message.wamid)
        return {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": to}],
            "messages": [{"id": message.wamid}],
        }


# --- request checks (Meta's sendMessage schema and the messages guides) ------------------------


def check_message(request: Any) -> None:
    """Raise ``GraphError`` unless ``request`` is a message the Cloud API would take."""
    if not isinstance(request, dict):
        raise invalid("body", "must be a JSON object")
    if request.get("messaging_product") != "whatsapp":
        raise invalid("messaging_product", "is required and must be 'whatsapp'")
    if request.get("recipient_type", "individual") != "individual":
        raise invalid("recipient_type", "must be 'individual'")
    to = request.get("to")
    if not isinstance(to, str) or not re.fullmatch(r"[0-9]{5,20}", to):
        raise invalid("to", "must be the recipient's number in digits")
    kind = request.get("type")
    if kind not in SUPPORTED_TYPES:
        raise invalid("type", f"must be one of {', '.join(SUPPORTED_TYPES)}")
    extra = set(request) - ENVELOPE - {kind}
    if extra:
        raise invalid(sorted(extra)[0], "is not a parameter of a message")
    CHECKS[kind](_obj(request.get(kind), kind))


def _check_text(text: JsonObject) -> None:
    _only(text, "text", {"body", "preview_url"})
    _text(text, "body", "text", 4096)
    if "preview_url" in text and not isinstance(text["preview_url"], bool):
        raise invalid("text['preview_url']", "must be a boolean")


def _check_media(media: JsonObject, where: str, *, caption: bool) -> None:
    _only(media, where, {"link", "id", "caption"} if caption else {"link", "id"})
    if ("link" in media) == ("id" in media):
        raise invalid(f"{where}['link']", "or id is required, not both")
    if "link" in media:
        link = media["link"]
        if not isinstance(link, str) or urlsplit(link).scheme not in {"http", "https"}:
            raise invalid(f"{where}['link']", "must be an http(s) URL")
    else:
        _text(media, "id", where, 200)
    if "caption" in media:
        _text(media, "caption", where, 1024, required=False)


def _check_image(image: JsonObject) -> None:
    _check_media(image, "image", caption=True)


def _check_interactive(interactive: JsonObject) -> None:
    _only(interactive, "interactive", {"type", "header", "body", "footer", "action"})
    kind = interactive.get("type")
    if kind not in {"button", "list"}:
        raise invalid("interactive['type']", "must be button or list")
    _text(_obj(interactive.get("body"), "interactive['body']"), "text", "interactive['body']", 1024)
    _only(interactive["body"], "interactive['body']", {"text"})
    if "footer" in interactive:
        footer = _obj(interactive["footer"], "interactive['footer']")
        _only(footer, "interactive['footer']", {"text"})
        _text(footer, "text", "interactive['footer']", 60)
    if "header" in interactive:
        _check_header(
            _obj(interactive["header"], "interactive['header']"), text_only=kind == "list"
        )
    action = _obj(interactive.get("action"), "interactive['action']")
    if kind == "button":
        _check_reply_buttons(action)
    else:
        _check_list(action)


def _check_header(header: JsonObject, *, text_only: bool) -> None:
    where = "interactive['header']"
    kind = header.get("type")
    allowed = {"text"} if text_only else {"text", "image", "video", "document"}
    if kind not in allowed:
        raise invalid(f"{where}['type']", f"must be {' or '.join(sorted(allowed))}")
    _only(header, where, {"type", kind})
    if kind == "text":
        _text(header, "text", where, 60)
    else:
        _check_media(
            _obj(header.get(kind), f"{where}['{kind}']"), f"{where}['{kind}']", caption=False
        )


def _check_reply_buttons(action: JsonObject) -> None:
    where = "interactive['action']['buttons']"
    _only(action, "interactive['action']", {"buttons"})
    buttons = _array(action.get("buttons"), where, 1, 3)
    ids: set[str] = set()
    titles: set[str] = set()
    for i, button in enumerate(buttons):
        button = _obj(button, f"{where}[{i}]")
        _only(button, f"{where}[{i}]", {"type", "reply"})
        if button.get("type") != "reply":
            raise invalid(f"{where}[{i}]['type']", "must be reply")
        reply = _obj(button.get("reply"), f"{where}[{i}]['reply']")
        _only(reply, f"{where}[{i}]['reply']", {"id", "title"})
        _distinct(
            _text(reply, "id", f"{where}[{i}]['reply']", 256), ids, f"{where}[{i}]['reply']['id']"
        )
        _distinct(
            _text(reply, "title", f"{where}[{i}]['reply']", 20),
            titles,
            f"{where}[{i}]['reply']['title']",
        )


def _check_list(action: JsonObject) -> None:
    where = "interactive['action']"
    _only(action, where, {"button", "sections"})
    _text(action, "button", where, 20)
    sections = _array(action.get("sections"), f"{where}['sections']", 1, 10)
    ids: set[str] = set()
    rows = 0
    for i, section in enumerate(sections):
        at = f"{where}['sections'][{i}]"
        section = _obj(section, at)
        _only(section, at, {"title", "rows"})
        if len(sections) > 1 or "title" in section:
            _text(section, "title", at, 24)
        for j, row in enumerate(_array(section.get("rows"), f"{at}['rows']", 1, 10)):
            _check_row(_obj(row, f"{at}['rows'][{j}]"), f"{at}['rows'][{j}]", ids)
            rows += 1
    if rows > 10:
        raise invalid(f"{where}['sections']", "must have at most 10 rows in all")


def _check_row(row: JsonObject, where: str, ids: set[str]) -> None:
    _only(row, where, {"id", "title", "description"})
    _distinct(_text(row, "id", where, 200), ids, f"{where}['id']")
    _text(row, "title", where, 24)
    if "description" in row:
        _text(row, "description", where, 72)


def _check_template(template: JsonObject) -> None:
    _only(template, "template", {"name", "language", "components"})
    name = _text(template, "name", "template", 512)
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise invalid("template['name']", "must be lower-case letters, digits and _")
    language = _obj(template.get("language"), "template['language']")
    _only(language, "template['language']", {"code", "policy"})
    _text(language, "code", "template['language']", 15)
    if language.get("policy", "deterministic") != "deterministic":
        raise invalid("template['language']['policy']", "must be deterministic")
    if "components" in template:
        components = _array(template["components"], "template['components']", 1, 13)
        for i, component in enumerate(components):
            _check_component(_obj(component, f"template['components'][{i}]"), i)


def _check_component(component: JsonObject, index: int) -> None:
    where = f"template['components'][{index}]"
    kind = component.get("type")
    if kind in {"header", "body"}:
        _only(component, where, {"type", "parameters"})
        for j, parameter in enumerate(
            _array(component.get("parameters"), f"{where}['parameters']", 1, 100)
        ):
            _check_parameter(
                _obj(parameter, f"{where}['parameters'][{j}]"), f"{where}['parameters'][{j}]"
            )
    elif kind == "button":
        _check_button_component(component, where)
    else:
        raise invalid(f"{where}['type']", "must be header, body or button")


def _check_parameter(parameter: JsonObject, where: str) -> None:
    kind = parameter.get("type")
    if kind not in {"text", "currency", "date_time", "image", "document", "video", "location"}:
        raise invalid(f"{where}['type']", "is not a template parameter type")
    _only(parameter, where, {"type", kind, "parameter_name"})
    if kind != "text":
        _obj(parameter.get(kind), f"{where}['{kind}']")
        return
    text = _text(parameter, "text", where, 32768)
    if re.search(r"[\t\n\r]| {5,}", text):
        # Cloud API error 132018: a parameter's text is one line without long runs of spaces.
        raise GraphError(
            400,
            132018,
            "(#132018) There was an issue with the parameters in your template.",
            details="Param text cannot have new-line/tab characters or more than 4"
            " consecutive spaces",
        )


def _check_button_component(component: JsonObject, where: str) -> None:
    _only(component, where, {"type", "sub_type", "index", "parameters"})
    sub_type = component.get("sub_type")
    if sub_type not in {"quick_reply", "url", "copy_code", "flow", "catalog"}:
        raise invalid(f"{where}['sub_type']", "is not a button type")
    index = component.get("index")
    if not (isinstance(index, int) and 0 <= index <= 9) and not (
        isinstance(index, str) and re.fullmatch(r"[0-9]", index)
    ):
        raise invalid(f"{where}['index']", "must be the button's position, 0 to 9")
    parameters = _array(component.get("parameters"), f"{where}['parameters']", 1, 1)
    parameter = _obj(parameters[0], f"{where}['parameters'][0]")
    if sub_type == "quick_reply":
        _only(parameter, f"{where}['parameters'][0]", {"type", "payload"})
        if parameter.get("type") != "payload":
            raise invalid(f"{where}['parameters'][0]['type']", "must be payload")
        _text(parameter, "payload", f"{where}['parameters'][0]", 256)


CHECKS = {
    "text": _check_text,
    "image": _check_image,
    "interactive": _check_interactive,
    "template": _check_template,
}


def _obj(value: Any, where: str) -> JsonObject:
    if not isinstance(value, dict):
        raise invalid(where, "is required and must be an object")
    return value


def _array(value: Any, where: str, least: int, most: int) -> list[Any]:
    if not isinstance(value, list):
        raise invalid(where, "is required and must be an array")
    if not least <= len(value) <= most:
        raise invalid(where, f"must have between {least} and {most} items")
    return value


def _text(parent: JsonObject, name: str, where: str, most: int, *, required: bool = True) -> str:
    value = parent.get(name)
    field = f"{where}['{name}']"
    if not isinstance(value, str) or (required and not value):
        raise invalid(field, "is required and must be a non-empty string")
    if len(value) > most:
        raise invalid(field, f"must be at most {most} characters long")
    return value


def _only(value: JsonObject, where: str, allowed: set[str]) -> None:
    extra = sorted(set(value) - allowed)
    if extra:
        raise invalid(f"{where}['{extra[0]}']", "is not a parameter here")


def _distinct(value: str, seen: set[str], where: str) -> None:
    if value in seen:
        raise invalid(where, "must be unique")
    seen.add(value)


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise invalid("body", "must be JSON") from None


# --- small helpers --------------------------------------------------------------------------------


def new_wamid(wa_id: str) -> str:
    """A message id shaped like WhatsApp's: ``wamid.`` and base64 of the number and random."""
    raw = (
        b"\x18\x0b"
        + wa_id.encode()
        + b"\x15\x02\x00\x11\x18\x12"
        + secrets.token_hex(9).upper().encode()
    )
    return "wamid." + base64.b64encode(raw + b"\x00").decode()


def _trace_id() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")[:23]


def _webhook_error(code: int, title: str, details: str) -> JsonObject:
    return {
        "code": code,
        "title": title,
        "message": title,
        "error_data": {"details": details},
        "href": ERROR_CODES_URL,
    }


def _split(target: str) -> tuple[str, dict[str, list[str]]]:
    parts = urlsplit(target)
    return parts.path, parse_qs(parts.query, keep_blank_values=True)


def _path_parts(path: str) -> tuple[str, str, str | None]:
    """``/v21.0/106540352242922/messages`` → ("v21.0", "106540352242922", "messages")."""
    segments = [s for s in path.split("/") if s]
    if len(segments) not in (2, 3):
        raise GraphError(400, 2500, f"Unknown path components: {path}")
    return segments[0], segments[1], segments[2] if len(segments) == 3 else None


def _handler(fake: FakeWhatsApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer()

        do_POST = do_GET

        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
            headers = {name.lower(): value for name, value in self.headers.items()}
            try:
                status, payload = 200, fake.handle(self.command, self.path, headers, body)
            except GraphError as exc:
                status, payload = exc.http_status, exc.body()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self._send(status, payload)

        def _send(self, status: int, payload: JsonObject) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            if status == 401:
                self.send_header("WWW-Authenticate", 'OAuth "Facebook Platform" "invalid_token"')
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("fake WhatsApp: " + format, *args)

    return Handler


# --- `python -m nudge.dev.fake_whatsapp` ---------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="DEVELOPMENT ONLY: a fake WhatsApp Cloud API.")
    parser.add_argument("--port", type=int, default=8455)
    parser.add_argument("--webhook-url", help="Nudge's webhook URL for the WhatsApp channel")
    parser.add_argument(
        "--auto-receipts",
        default="sent,delivered,read",
        help="statuses posted for each accepted message, comma-separated ('' for none)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    fake = FakeWhatsApp(port=args.port)
    fake.webhook_url = args.webhook_url
    fake.auto_receipts = tuple(s for s in args.auto_receipts.split(",") if s)
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    with fake:
        # The credentials are the constructor's defaults (see FakeWhatsApp), not logged.
        log.info("fake WhatsApp at %s, phone_number_id %s", fake.base_url, fake.phone_number_id)
        stopping.wait()


if __name__ == "__main__":
    main()
