"""Channel definitions: how a message leaves Nudge."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from nudge.models.email_address import EmailAddress

CHANNEL_SLUG = r"^[a-z0-9][a-z0-9_-]{0,62}$"
LAST_USED = "last_used"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LogConfig(_Strict):
    """Writes each message to the worker's log; for development."""


class WebhookConfig(_Strict):
    url: HttpUrl
    secret: Annotated[SecretStr, Field(max_length=1_000)] | None = Field(
        default=None,
        description="Signs each body: `X-Nudge-Signature: t=<unix time>,v1=<hex HMAC>`.",
    )
    timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 10


class EmailConfig(_Strict):
    host: Annotated[str, Field(min_length=1, max_length=253)]
    port: Annotated[int, Field(ge=1, le=65535)] = 587
    security: Literal["starttls", "tls", "none"] = Field(
        default="starttls",
        description="`starttls` upgrades a plain connection, `tls` connects over TLS (port 465).",
    )
    verify_certificate: bool = True
    username: Annotated[str, Field(max_length=320)] | None = None
    password: Annotated[SecretStr, Field(max_length=1_000)] | None = None
    from_address: EmailAddress
    from_name: Annotated[str, Field(max_length=200)] | None = None
    timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 30


_HTTP_URL: TypeAdapter[HttpUrl] = TypeAdapter(HttpUrl)


def _http_url(value: SecretStr) -> SecretStr:
    """A secret that must be an http(s) URL; the error message never repeats the value."""
    try:
        _HTTP_URL.validate_python(value.get_secret_value())
    except ValidationError:
        raise ValueError("must be an http:// or https:// URL") from None
    return value


class SlackConfig(_Strict):
    webhook_url: Annotated[SecretStr, Field(max_length=2_000), AfterValidator(_http_url)] = Field(
        description="The incoming-webhook URL Slack gave you; a credential, never returned."
    )
    username: Annotated[str, Field(min_length=1, max_length=80)] | None = Field(
        default=None, description="Sender name shown in Slack (legacy webhooks only)."
    )
    icon_emoji: Annotated[str, Field(pattern=r"^:\S+:$", max_length=100)] | None = Field(
        default=None, description="Sender icon, e.g. `:bell:` (legacy webhooks only)."
    )
    timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 10


_TOKEN = Annotated[SecretStr, Field(min_length=1, max_length=1_000)]
WHATSAPP_API = "https://graph.facebook.com"
TWILIO_API = "https://api.twilio.com"


class WhatsAppConfig(_Strict):
    """A WhatsApp Business phone number on Meta's Cloud API."""

    phone_number_id: Annotated[str, Field(pattern=r"^[0-9]{1,30}$")] = Field(
        description="The number's id in WhatsApp Manager (not the phone number itself)."
    )
    access_token: _TOKEN = Field(description="A system user's token; stored encrypted.")
    app_secret: _TOKEN = Field(
        description="The Meta app's secret: checks `X-Hub-Signature-256` on webhooks."
    )
    verify_token: _TOKEN = Field(
        description="What you type as the webhook's verify token in the Meta app."
    )
    api_version: Annotated[str, Field(pattern=r"^v[0-9]{1,3}\.[0-9]{1,2}$")] = "v21.0"
    base_url: HttpUrl = Field(
        default=HttpUrl(WHATSAPP_API), description="The Graph API; tests point it at a fake."
    )
    timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 10


class SmsConfig(_Strict):
    """An SMS sender on Twilio's Messages API: a number (`from`) or a messaging service."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    account_sid: Annotated[str, Field(pattern=r"^AC[0-9a-fA-F]{32}$")]
    auth_token: _TOKEN = Field(description="Signs requests and callbacks; stored encrypted.")
    from_: Annotated[
        str | None,
        Field(
            alias="from",
            pattern=r"^\+[1-9][0-9]{6,14}$|^[A-Za-z0-9 ]{1,11}$",
            description="The sending number (E.164) or an alphanumeric sender id.",
        ),
    ] = None
    messaging_service_sid: Annotated[str, Field(pattern=r"^MG[0-9a-fA-F]{32}$")] | None = None
    base_url: HttpUrl = Field(
        default=HttpUrl(TWILIO_API), description="Twilio's API; tests point it at a fake."
    )
    timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 10

    @model_validator(mode="after")
    def _one_sender(self) -> SmsConfig:
        if (self.from_ is None) == (self.messaging_service_sid is None):
            raise ValueError("give exactly one of `from` and `messaging_service_sid`")
        return self


class _ChannelPutBase(_Strict):
    fallback: Annotated[list[Annotated[str, Field(pattern=CHANNEL_SLUG)]], Field(max_length=5)] = (
        Field(
            default=[],
            description="Channels tried in order, once each, for a recipient whose send on"
            " this one fails for good or is not delivered within `fallback_after_minutes`.",
        )
    )
    fallback_after_minutes: Annotated[int, Field(ge=1, le=10_080)] | None = Field(
        default=None,
        description="How long a sent message may stay undelivered before the next fallback"
        " channel is tried; none: only a failed send falls back.",
    )

    @model_validator(mode="after")
    def _fallback_is_distinct(self) -> _ChannelPutBase:
        if len(set(self.fallback)) != len(self.fallback):
            raise ValueError("`fallback` names a channel twice")
        if self.fallback_after_minutes is not None and not self.fallback:
            raise ValueError("`fallback_after_minutes` needs `fallback` channels")
        return self


class LogChannelPut(_ChannelPutBase):
    type: Literal["log"]
    config: LogConfig = LogConfig()


class WebhookChannelPut(_ChannelPutBase):
    type: Literal["webhook"]
    config: WebhookConfig


class EmailChannelPut(_ChannelPutBase):
    type: Literal["email"]
    config: EmailConfig


class SlackChannelPut(_ChannelPutBase):
    type: Literal["slack"]
    config: SlackConfig


class WhatsAppChannelPut(_ChannelPutBase):
    type: Literal["whatsapp"]
    config: WhatsAppConfig


class SmsChannelPut(_ChannelPutBase):
    type: Literal["sms"]
    config: SmsConfig


ChannelPut = Annotated[
    LogChannelPut
    | WebhookChannelPut
    | EmailChannelPut
    | SlackChannelPut
    | WhatsAppChannelPut
    | SmsChannelPut,
    Field(discriminator="type"),
]

# Fields of a config that are credentials: stored encrypted, never returned.
CREDENTIAL_FIELDS = {
    "webhook": ("secret",),
    "email": ("password",),
    "slack": ("webhook_url",),
    "whatsapp": ("access_token", "app_secret", "verify_token"),
    "sms": ("auth_token",),
}
# Channels whose provider reports delivery and reading, and writes to Nudge's webhook URL.
PROVIDER_CHANNELS = frozenset({"whatsapp", "sms"})


def split_credentials(channel: ChannelPut) -> tuple[dict[str, Any], dict[str, str]]:
    """The public part of a channel config, and its credentials in plain text."""
    config = channel.config.model_dump(mode="json", exclude_none=True, by_alias=True)
    credentials: dict[str, str] = {}
    for name in CREDENTIAL_FIELDS.get(channel.type, ()):
        value = getattr(channel.config, name)
        config.pop(name, None)
        if value is not None:
            credentials[name] = value.get_secret_value()
    return config, credentials


class ChannelPublic(BaseModel):
    id: str
    type: str
    config: dict[str, Any] = Field(description="The configuration, without credentials.")
    credentials_set: list[str] = Field(description="Which credentials are stored (never shown).")
    fallback: list[str] = Field(default=[], description="Tried in order when a send fails.")
    fallback_after_minutes: int | None = None
    webhook_url: str | None = Field(
        default=None,
        description="WhatsApp and SMS: the URL to give the provider for receipts and"
        " incoming messages.",
    )
    updated_at: datetime
