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


class LogChannelPut(_Strict):
    type: Literal["log"]
    config: LogConfig = LogConfig()


class WebhookChannelPut(_Strict):
    type: Literal["webhook"]
    config: WebhookConfig


class EmailChannelPut(_Strict):
    type: Literal["email"]
    config: EmailConfig


class SlackChannelPut(_Strict):
    type: Literal["slack"]
    config: SlackConfig


ChannelPut = Annotated[
    LogChannelPut | WebhookChannelPut | EmailChannelPut | SlackChannelPut,
    Field(discriminator="type"),
]

# Fields of a config that are credentials: stored encrypted, never returned.
CREDENTIAL_FIELDS = {"webhook": ("secret",), "email": ("password",), "slack": ("webhook_url",)}


def split_credentials(channel: ChannelPut) -> tuple[dict[str, Any], dict[str, str]]:
    """The public part of a channel config, and its credentials in plain text."""
    config = channel.config.model_dump(mode="json", exclude_none=True)
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
    updated_at: datetime
