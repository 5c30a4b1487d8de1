"""Channels: how messages leave."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path

from nudge.api.deps import AdminDep, PageDep, SecretBoxDep, SessionDep, SettingsDep
from nudge.errors import InvalidInput
from nudge.messaging.delivery import webhook_url
from nudge.models.channels import (
    CHANNEL_SLUG,
    LAST_USED,
    PROVIDER_CHANNELS,
    ChannelPublic,
    ChannelPut,
)
from nudge.models.pages import Page
from nudge.models.tables import Channel
from nudge.security import SecretBox
from nudge.settings import Settings
from nudge.store.directory import channel_credentials, channels_page, get_channel, put_channel

router = APIRouter(prefix="/v1/channels", tags=["channels"])

ChannelId = Annotated[str, Path(pattern=CHANNEL_SLUG, description="Your name for the channel.")]

_EXAMPLES = {
    "webhook": {
        "value": {
            "type": "webhook",
            "config": {"url": "https://example.com/hook", "secret": "s3cret"},
        }
    },
    "email": {
        "value": {
            "type": "email",
            "config": {
                "host": "smtp.example.com",
                "port": 587,
                "security": "starttls",
                "username": "nudge",
                "password": "…",
                "from_address": "nudge@example.com",
            },
        }
    },
    "log": {"value": {"type": "log"}},
}


def channel_public(
    channel: Channel, box: SecretBox, settings: Settings, tenant_slug: str
) -> ChannelPublic:
    return ChannelPublic(
        id=channel.slug,
        type=channel.type,
        config=channel.config,
        credentials_set=sorted(channel_credentials(channel, box)),
        fallback=channel.fallback or [],
        fallback_after_minutes=channel.fallback_after_minutes,
        webhook_url=webhook_url(settings.public_url, tenant_slug, channel.slug)
        if channel.type in PROVIDER_CHANNELS
        else None,
        updated_at=channel.updated_at,
    )


@router.put("/{channel_id}")
async def upsert_channel(
    channel_id: ChannelId,
    body: Annotated[ChannelPut, Body(openapi_examples=_EXAMPLES)],
    principal: AdminDep,
    session: SessionDep,
    box: SecretBoxDep,
    settings: SettingsDep,
) -> ChannelPublic:
    """Create or replace a channel. Credentials are stored encrypted and never returned."""
    if channel_id == LAST_USED:
        raise InvalidInput.at(("path", "channel_id"), f"{LAST_USED!r} is reserved")
    channel = await put_channel(session, principal.tenant_id, channel_id, body, box)
    await session.commit()
    return channel_public(channel, box, settings, principal.tenant_slug)


@router.get("")
async def read_channels(
    principal: AdminDep,
    session: SessionDep,
    box: SecretBoxDep,
    page: PageDep,
    settings: SettingsDep,
) -> Page[ChannelPublic]:
    """The tenant's channels, by id."""
    rows, next_cursor = await channels_page(session, principal.tenant_id, page)
    return Page[ChannelPublic](
        items=[channel_public(c, box, settings, principal.tenant_slug) for c in rows],
        next_cursor=next_cursor,
    )


@router.get("/{channel_id}")
async def read_channel(
    channel_id: ChannelId,
    principal: AdminDep,
    session: SessionDep,
    box: SecretBoxDep,
    settings: SettingsDep,
) -> ChannelPublic:
    """One channel, without its credentials."""
    return channel_public(
        await get_channel(session, principal.tenant_id, channel_id),
        box,
        settings,
        principal.tenant_slug,
    )
