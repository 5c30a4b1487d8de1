"""The SMS channel: Twilio's Messages API, one form-encoded POST per message.

Shapes follow Twilio's OpenAPI description (github.com/twilio/twilio-oai,
spec/json/twilio_api_v2010.json): operation ``CreateMessage`` on
``/2010-04-01/Accounts/{AccountSid}/Messages.json`` takes a ``CreateMessageRequest``
(To, From or MessagingServiceSid, Body, MediaUrl, StatusCallback) and answers 201 with an
``api.v2010.account.message`` (sid, status, num_segments as a string, ...). Refusals carry
Twilio's error body ``{"code", "message", "more_info", "status"}``
(https://www.twilio.com/docs/api/errors).

The auth token is the credential: it travels only in the Authorization header and never
appears in error messages or receipts.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import httpx

from nudge.egress import EgressRefused
from nudge.messaging.channels.base import (
    MAX_BODY_KEPT,
    RETRYABLE_CLIENT_ERRORS,
    Outbound,
    ProviderRejected,
    ProviderUnavailable,
    Receipt,
    RecipientUnreachable,
    free_form,
)
from nudge.models.channels import SmsConfig
from nudge.models.messages import CardMessage, ImageMessage, TextMessage, plain_text

Message = TextMessage | CardMessage | ImageMessage
Form = dict[str, str]

API_VERSION = "2010-04-01"
# CreateMessageRequest.Body: "Can be up to 1,600 characters in length"; longer bodies are
# refused whole with error 21617. Twilio splits what fits into segments itself, so a long
# body is cut here (ending in "…") rather than lost.
MAX_BODY = 1600
ELLIPSIS = "…"
# Twilio's "Too Many Requests" (https://www.twilio.com/docs/api/errors/20429): come back
# later, whatever HTTP status carries it.
RETRYABLE_CODES = frozenset({20429})
REDACTED = "[redacted]"


class TwilioSmsChannel:
    """One POST per message; no retries here, Temporal retries the activity."""

    # Twilio's Messages API has no idempotency on create: a second POST is a second SMS
    # (and a second bill). An unknown outcome is recorded as such, never sent again on
    # its own.
    honours_idempotency_key = False

    def __init__(self, config: SmsConfig, http: httpx.AsyncClient) -> None:
        self._config = config
        self._http = http
        self._token = config.auth_token.get_secret_value()
        self._url = messages_url(config)

    async def send(self, outbound: Outbound) -> Receipt:
        phone = outbound.recipient.phone
        if not phone:
            raise RecipientUnreachable(
                f"recipient {outbound.recipient.external_id!r} has no phone number"
            )
        form = build_form(
            free_form(outbound.message), phone, self._config, outbound.status_callback_url
        )
        response = await self._post(form)
        return self._receipt_or_raise(response)

    async def _post(self, form: Form) -> httpx.Response:
        timeout = self._config.timeout_seconds
        try:
            return await self._http.post(
                self._url,
                data=form,
                auth=httpx.BasicAuth(self._config.account_sid, self._token),
                headers={"Accept": "application/json"},
                timeout=timeout,
                # A redirect would carry the credentials to an address nobody configured.
                follow_redirects=False,
            )
        except EgressRefused as exc:
            raise ProviderRejected(str(exc)) from None
        except httpx.TimeoutException as exc:
            raise ProviderUnavailable(
                self._redact(f"Twilio timed out after {timeout}s: {exc!r}"),
                maybe_delivered=_was_sent(exc),
            ) from exc
        except httpx.TransportError as exc:
            raise ProviderUnavailable(
                self._redact(f"Twilio unreachable: {exc!r}"), maybe_delivered=_was_sent(exc)
            ) from exc

    def _receipt_or_raise(self, response: httpx.Response) -> Receipt:
        text = self._redact(response.text)
        answer: dict[str, Any] = {"status_code": response.status_code, "body": text[:MAX_BODY_KEPT]}
        payload = _json_object(text)
        if response.is_success:
            return _receipt(answer, payload)
        raise _refusal(response, answer, payload)

    def _redact(self, text: str) -> str:
        # Twilio never echoes the token, but a proxy or a fake in between might.
        return text.replace(self._token, REDACTED)


def messages_url(config: SmsConfig) -> str:
    """The Message list resource of the configured account."""
    base = str(config.base_url).rstrip("/")
    return f"{base}/{API_VERSION}/Accounts/{config.account_sid}/Messages.json"


def build_form(
    message: Message, phone: str, config: SmsConfig, status_callback: str | None
) -> Form:
    """The CreateMessageRequest parameters, in the order they are sent."""
    form: Form = {"To": phone}
    if config.messaging_service_sid is not None:
        form["MessagingServiceSid"] = config.messaging_service_sid
    elif config.from_ is not None:
        form["From"] = config.from_
    body, media_url = body_and_media(message)
    if body:
        form["Body"] = body
    if media_url is not None:
        form["MediaUrl"] = media_url
    if status_callback:
        form["StatusCallback"] = status_callback
    return form


def body_and_media(message: Message) -> tuple[str, str | None]:
    """The text to send and the picture to attach (MMS), if any.

    Only an image with an https URL travels as media: Twilio fetches it from the public
    internet, and a plain http or relative address would fail the whole message (21620).
    Anything else reads as text: a card becomes its title, text, image link and one
    "label: url" line per button.
    """
    if isinstance(message, ImageMessage) and _https(message.image.url):
        return fit_body(message.image.caption.strip()), message.image.url.strip()
    return fit_body(plain_text(message)), None


def fit_body(text: str) -> str:
    """``text`` within Twilio's 1,600-character limit, cut with "…" when longer."""
    if len(text) <= MAX_BODY:
        return text
    return text[: MAX_BODY - len(ELLIPSIS)] + ELLIPSIS


def _https(url: str) -> bool:
    parts = urlsplit(url.strip())
    return parts.scheme.lower() == "https" and bool(parts.hostname)


def _receipt(answer: dict[str, Any], payload: dict[str, Any]) -> Receipt:
    sid = payload.get("sid")
    if not isinstance(sid, str) or not sid:
        # Something answered 2xx without a Message resource (a proxy?): the SMS may or may
        # not exist, and sending again could send it twice.
        raise ProviderUnavailable(
            f"Twilio answered {answer['status_code']} without a message sid",
            response=answer,
            maybe_delivered=True,
        )
    answer["sid"] = sid
    if isinstance(payload.get("status"), str):
        answer["status"] = payload["status"]
    return Receipt(answer, provider_message_id=sid, segments=_segments(payload))


def _segments(payload: dict[str, Any]) -> int | None:
    """``num_segments``: a string per the spec; "0" when a Messaging Service has not yet
    picked the sender (the count is unknown then, not zero)."""
    try:
        segments = int(payload.get("num_segments") or 0)
    except (TypeError, ValueError):
        return None
    return segments if segments > 0 else None


def _refusal(
    response: httpx.Response, answer: dict[str, Any], payload: dict[str, Any]
) -> ProviderUnavailable | ProviderRejected:
    """The error for a non-2xx answer, naming Twilio's code and message."""
    code = payload.get("code")
    for name in ("code", "message", "more_info"):
        if payload.get(name) is not None:
            answer[name] = payload[name]
    if "retry-after" in response.headers:
        answer["retry_after"] = response.headers["retry-after"]
    text = _refusal_text(response.status_code, payload, answer["body"])
    if (
        response.status_code >= 500
        or response.status_code in RETRYABLE_CLIENT_ERRORS
        or code in RETRYABLE_CODES
    ):
        return ProviderUnavailable(text, response=answer)
    return ProviderRejected(text, response=answer)


def _refusal_text(status_code: int, payload: dict[str, Any], body: str) -> str:
    """E.g. "Twilio answered 400 (error 21211): The 'To' number … is not a valid phone
    number. — see https://www.twilio.com/docs/errors/21211"."""
    code = payload.get("code")
    if code is None:
        return f"Twilio answered {status_code}: {body}"
    text = f"Twilio answered {status_code} (error {code})"
    if payload.get("message"):
        text += f": {payload['message']}"
    if payload.get("more_info"):
        text += f" — see {payload['more_info']}"
    return text


def _json_object(text: str) -> dict[str, Any]:
    try:
        payload = json.loads(text)
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _was_sent(exc: httpx.TransportError) -> bool:
    """Whether the request may have reached Twilio: all but failures to connect."""
    return not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
