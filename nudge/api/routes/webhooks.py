"""Providers' webhooks: one URL per channel, for receipts and the contacts' messages.

`GET|POST /v1/webhooks/{tenant}/{channel}`. Nothing here trusts the caller: the body must
be signed with the channel's secret (WhatsApp's `X-Hub-Signature-256`, Twilio's
`X-Twilio-Signature`), else 401 and nothing is stored. An unknown tenant or channel gets
the same 401, so the URL does not tell which tenants exist.

Receipts move deliveries forward; messages go through the same path as
`POST /v1/events/messages` (history, replies, journeys, exits) and are relayed to
Temporal through the outbox after the commit. A provider's retry of a callback changes
nothing: receipts are kept once per message and status, messages once per provider id.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Path, Request, status
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.api.deps import SecretBoxDep, SessionDep, SettingsDep
from nudge.api.openapi import ErrorMessage
from nudge.api.relay import RelayDep
from nudge.messaging.delivery import webhook_url
from nudge.messaging.inbound import BadSignature, BadWebhook, InboundMessage, WebhookBatch
from nudge.messaging.providers import twilio, whatsapp
from nudge.metrics import count_event
from nudge.models.channels import CHANNEL_SLUG
from nudge.models.events import MessageEvent
from nudge.models.tables import Channel, Contact, OutboxEntry, Tenant
from nudge.runs.fallbacks import stage_fallback_after_failure
from nudge.runs.incoming import stage_message
from nudge.security import SecretBox
from nudge.settings import Settings
from nudge.store.directory import (
    add_contact_for_phone,
    channel_credentials,
    find_channel,
    find_contact_by_phone,
)
from nudge.store.messages import add_event_message
from nudge.store.presses import pressed_buttons
from nudge.store.receipts import record_receipt
from nudge.store.tenants import find_tenant

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

TenantSlug = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
ChannelSlug = Annotated[str, Path(pattern=CHANNEL_SLUG)]
_UNSIGNED = {"detail": "not signed with this channel's secret"}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {
        "model": ErrorMessage,
        "description": "Unsigned, badly signed, or not a channel that takes webhooks.",
    },
    400: {"model": ErrorMessage, "description": "Signed, but not a body this provider sends."},
}
_HANDSHAKE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_RESPONSES,
    200: {
        "content": {"text/plain": {"schema": {"type": "string"}}},
        "description": "The challenge.",
    },
    403: {"model": ErrorMessage, "description": "`hub.verify_token` is not the channel's."},
}


@dataclass(frozen=True)
class _Target:
    tenant: Tenant
    channel: Channel
    credentials: dict[str, str]


@router.get("/{tenant}/{channel}", responses=_HANDSHAKE_RESPONSES)
async def verify_subscription(
    tenant: TenantSlug,
    channel: ChannelSlug,
    request: Request,
    session: SessionDep,
    box: SecretBoxDep,
) -> Response:
    """WhatsApp's subscription handshake: answers `hub.challenge` when `hub.verify_token`
    is the channel's verify token."""
    target = await _target(session, box, tenant, channel)
    if target is None or target.channel.type != "whatsapp":
        return JSONResponse(_UNSIGNED, status_code=status.HTTP_401_UNAUTHORIZED)
    challenge = whatsapp.handshake(request.query_params, target.credentials["verify_token"])
    if challenge is None:
        return JSONResponse(
            {"detail": "hub.verify_token does not match"}, status_code=status.HTTP_403_FORBIDDEN
        )
    return PlainTextResponse(challenge)


@router.post("/{tenant}/{channel}", responses=_RESPONSES)
async def provider_webhook(
    tenant: TenantSlug,
    channel: ChannelSlug,
    request: Request,
    session: SessionDep,
    box: SecretBoxDep,
    settings: SettingsDep,
    relay: RelayDep,
) -> Response:
    """Receipts and incoming messages from the channel's provider, signed by it."""
    body = await request.body()
    target = await _target(session, box, tenant, channel)
    if target is None:
        return JSONResponse(_UNSIGNED, status_code=status.HTTP_401_UNAUTHORIZED)
    try:
        batch = _verified_batch(target, settings, request, body)
    except BadSignature:
        log.warning("webhook for %s/%s refused: bad signature", tenant, channel)
        return JSONResponse(_UNSIGNED, status_code=status.HTTP_401_UNAUTHORIZED)
    except BadWebhook as exc:
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_400_BAD_REQUEST)
    entries = await _store(session, settings, target, batch)
    await relay.relay_written(entries)
    if target.channel.type == "sms":
        # Twilio reads the answer to an incoming message as the reply to send: none.
        return Response(twilio.twiml_empty(), media_type="text/xml")
    return JSONResponse({"status": "ok"})


async def _target(
    session: AsyncSession, box: SecretBox, tenant_slug: str, channel_slug: str
) -> _Target | None:
    tenant = await find_tenant(session, tenant_slug)
    if tenant is None:
        return None
    channel = await find_channel(session, tenant.id, channel_slug)
    if channel is None or channel.type not in ("whatsapp", "sms"):
        return None
    return _Target(tenant, channel, channel_credentials(channel, box))


def _verified_batch(
    target: _Target, settings: Settings, request: Request, body: bytes
) -> WebhookBatch:
    """The body's receipts and messages, once its signature is checked."""
    if target.channel.type == "whatsapp":
        whatsapp.verify_signature(
            target.credentials["app_secret"], body, request.headers.get("x-hub-signature-256")
        )
        return whatsapp.parse_webhook(body)
    params = _form(body)
    # Twilio signs the URL it was given, which is the public one, not what reached us.
    url = webhook_url(settings.public_url, target.tenant.slug, target.channel.slug)
    if request.url.query:
        url = f"{url}?{request.url.query}"
    twilio.verify_signature(
        target.credentials["auth_token"], url, params, request.headers.get("x-twilio-signature")
    )
    return twilio.parse_webhook(params)


def _form(body: bytes) -> Mapping[str, str]:
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False))
    except UnicodeDecodeError:
        raise BadWebhook("the body is not form-encoded UTF-8") from None


async def _store(
    session: AsyncSession, settings: Settings, target: _Target, batch: WebhookBatch
) -> list[OutboxEntry]:
    """Receipts and messages in one transaction; the outbox entries to relay after it."""
    tenant, channel = target.tenant, target.channel
    entries: list[OutboxEntry] = []
    for update in batch.statuses:
        delivery = await record_receipt(
            session,
            tenant_id=tenant.id,
            channel=channel.slug,
            provider_message_id=update.provider_message_id,
            status=update.status,
            at=update.at,
            error_code=update.error_code,
            error=update.error,
        )
        if delivery is not None and update.status in ("failed", "undelivered"):
            await session.refresh(delivery)
            if delivery.status == update.status:
                fallback = await stage_fallback_after_failure(
                    session, settings, tenant.slug, delivery
                )
                entries += [fallback] if fallback is not None else []
    for message in batch.messages:
        entries += await _incoming(session, settings, tenant, channel, message)
    try:
        await session.commit()
    except IntegrityError:
        # The same message, delivered twice at once by the provider: the other one won.
        await session.rollback()
        return []
    for _ in batch.statuses:
        count_event("receipt", "accepted")
    return entries


async def _incoming(
    session: AsyncSession,
    settings: Settings,
    tenant: Tenant,
    channel: Channel,
    message: InboundMessage,
) -> list[OutboxEntry]:
    contact = await _sender(session, tenant, message)
    event = MessageEvent(
        contact_id=contact.external_id,
        direction="incoming",
        channel=channel.slug,
        # Customer text is data; PostgreSQL cannot store a NUL in it.
        text=message.text.replace("\x00", "")[:10_000],
        message_id=message.provider_message_id,
        at=message.at,
    )
    if not await add_event_message(session, tenant.id, contact, event):
        count_event("message", "duplicate")
        return []
    key = f"message:{message.provider_message_id}"
    presses = await pressed_buttons(session, tenant.id, channel.slug, contact, message)
    staged = await stage_message(
        session, settings, tenant.id, tenant.slug, contact, event, key, presses, message.payload
    )
    count_event("message", "accepted")
    return staged.entries


async def _sender(session: AsyncSession, tenant: Tenant, message: InboundMessage) -> Contact:
    """The contact who wrote; a number nobody has becomes a contact (by phone)."""
    contact = await find_contact_by_phone(session, tenant.id, message.phone, message.whatsapp_id)
    if contact is None:
        contact = await add_contact_for_phone(
            session, tenant.id, message.phone, message.profile_name
        )
    return contact
