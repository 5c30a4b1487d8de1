"""Builds the sender for a stored channel: one line per channel type."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from nudge.egress import EgressPolicy
from nudge.messaging.channels.base import ChannelSender
from nudge.messaging.channels.email import EmailChannel
from nudge.messaging.channels.log import LogChannel
from nudge.messaging.channels.slack import SlackChannel
from nudge.messaging.channels.sms import TwilioSmsChannel
from nudge.messaging.channels.webhook import WebhookChannel
from nudge.messaging.channels.whatsapp import WhatsAppChannel
from nudge.models.channels import (
    EmailConfig,
    LogConfig,
    SlackConfig,
    SmsConfig,
    WebhookConfig,
    WhatsAppConfig,
)

# Each builder receives the stored config with its credentials merged back in, the HTTP client
# for tenants' traffic (it applies the egress policy) and the policy itself, for other protocols.
SenderBuilder = Callable[[dict[str, Any], httpx.AsyncClient, EgressPolicy], ChannelSender]

_BUILDERS: dict[str, SenderBuilder] = {
    "log": lambda settings, http, egress: LogChannel(LogConfig.model_validate(settings)),
    "webhook": lambda settings, http, egress: WebhookChannel(
        WebhookConfig.model_validate(settings), http
    ),
    "email": lambda settings, http, egress: EmailChannel(
        EmailConfig.model_validate(settings), egress
    ),
    "slack": lambda settings, http, egress: SlackChannel(
        SlackConfig.model_validate(settings), http
    ),
    "whatsapp": lambda settings, http, egress: WhatsAppChannel(
        WhatsAppConfig.model_validate(settings), http
    ),
    "sms": lambda settings, http, egress: TwilioSmsChannel(
        SmsConfig.model_validate(settings), http
    ),
}


def build_sender(
    channel_type: str,
    config: dict[str, Any],
    credentials: dict[str, str],
    http: httpx.AsyncClient,
    egress: EgressPolicy,
) -> ChannelSender:
    """The sender for one channel. Raises ``ValueError`` for an unknown type or invalid config."""
    try:
        builder = _BUILDERS[channel_type]
    except KeyError:
        raise ValueError(f"unknown channel type {channel_type!r}") from None
    return builder({**config, **credentials}, http, egress)
