"""The webhook channel: POSTs a signed JSON body to the tenant's URL (see API.md)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from nudge.activities.channels.base import (
    Outbound,
    ProviderRejected,
    ProviderUnavailable,
    Receipt,
    Recipient,
)
from nudge.models.channels import WebhookConfig
from nudge.security import sign

MAX_BODY_KEPT = 2000
# 408 and 429 ask the caller to come back later; every other 4xx is final.
RETRYABLE_CLIENT_ERRORS = frozenset({408, 429})


class WebhookChannel:
    """One POST per message; no retries here, Temporal retries the activity."""

    def __init__(self, config: WebhookConfig, http: httpx.AsyncClient) -> None:
        self._config = config
        self._http = http

    async def send(self, outbound: Outbound) -> Receipt:
        body = encode_body(outbound)
        try:
            response = await self._http.post(
                str(self._config.url),
                content=body,
                headers=self._headers(outbound.idempotency_key, body),
                timeout=self._config.timeout_seconds,
                # A redirect would carry the signed body to an address nobody configured.
                follow_redirects=False,
            )
        except httpx.TimeoutException as exc:
            raise ProviderUnavailable(
                f"webhook timed out after {self._config.timeout_seconds}s: {exc!r}"
            ) from exc
        except httpx.TransportError as exc:
            raise ProviderUnavailable(f"webhook unreachable: {exc!r}") from exc
        return _receipt_or_raise(response)

    def _headers(self, idempotency_key: str, body: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key}
        if self._config.secret is not None:
            headers["X-Nudge-Signature"] = sign(self._config.secret.get_secret_value(), body)
        return headers


def encode_body(outbound: Outbound) -> bytes:
    """The exact bytes that are sent and signed."""
    payload = {
        "tenant": outbound.tenant,
        "idempotency_key": outbound.idempotency_key,
        "channel": outbound.channel,
        "recipient": _recipient_fields(outbound.recipient),
        "message": outbound.message.model_dump(mode="json", exclude_none=True),
        "source": outbound.source,
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _recipient_fields(recipient: Recipient) -> dict[str, str]:
    fields = {
        "external_id": recipient.external_id,
        "email": recipient.email,
        "name": recipient.name,
        "phone": recipient.phone,
        "chat_id": recipient.chat_id,
    }
    return {name: value for name, value in fields.items() if value is not None}


def _receipt_or_raise(response: httpx.Response) -> Receipt:
    answer: dict[str, Any] = {
        "status_code": response.status_code,
        "body": response.text[:MAX_BODY_KEPT],
    }
    if response.is_success:
        return Receipt(answer)
    if "retry-after" in response.headers:
        answer["retry_after"] = response.headers["retry-after"]
    message = f"webhook answered {response.status_code}: {answer['body']}"
    if response.status_code >= 500 or response.status_code in RETRYABLE_CLIENT_ERRORS:
        raise ProviderUnavailable(message, response=answer)
    raise ProviderRejected(message, response=answer)
