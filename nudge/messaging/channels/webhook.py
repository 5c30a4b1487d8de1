"""The webhook channel: POSTs a signed JSON body to the tenant's URL (see API.md)."""

from __future__ import annotations

import json

import httpx

from nudge.egress import EgressRefused
from nudge.messaging.channels.base import (
    Outbound,
    ProviderRejected,
    ProviderUnavailable,
    Receipt,
    Recipient,
    receipt_or_raise,
)
from nudge.models.channels import WebhookConfig
from nudge.security import sign


class WebhookChannel:
    """One POST per message; no retries here, Temporal retries the activity."""

    # API.md's contract: receivers drop a second POST with the same Idempotency-Key, so a
    # try whose outcome is unknown is safely sent again.
    honours_idempotency_key = True

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
        except EgressRefused as exc:
            raise ProviderRejected(str(exc)) from None
        except httpx.TimeoutException as exc:
            raise ProviderUnavailable(
                f"webhook timed out after {self._config.timeout_seconds}s: {exc!r}"
            ) from exc
        except httpx.TransportError as exc:
            raise ProviderUnavailable(f"webhook unreachable: {exc!r}") from exc
        return receipt_or_raise(response, "webhook")

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
