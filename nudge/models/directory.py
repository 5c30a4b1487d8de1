"""Directory schemas: contacts, groups, secrets and the conversation history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from zoneinfo import available_timezones

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from nudge.models.email_address import EmailAddress
from nudge.models.phones import e164, whatsapp_id
from nudge.models.secret_hosts import MAX_ALLOWED_HOSTS, AllowedHosts

EXTERNAL_ID = Annotated[str, Field(min_length=1, max_length=200)]


class ContactPut(BaseModel):
    """A contact as a service or admin writes it; omitted fields are cleared."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "Ada Lovelace", "email": "ada@example.com", "timezone": "Europe/London"}
            ]
        },
    )

    name: Annotated[str, Field(max_length=200)] | None = None
    email: EmailAddress | None = None
    phone: Annotated[str, Field(max_length=40)] | None = Field(
        default=None,
        description="An international number; stored as E.164, e.g. +34600111222.",
    )
    whatsapp_id: Annotated[str, Field(max_length=32)] | None = Field(
        default=None,
        description="The contact's WhatsApp id (`wa_id`, digits) when it is not the phone's.",
    )
    chat_id: Annotated[str, Field(max_length=200)] | None = None
    timezone: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="IANA zone, e.g. Europe/Madrid."
    )
    attributes: dict[Annotated[str, Field(max_length=100)], Any] = Field(
        default_factory=dict, max_length=100, description="Custom attributes (at most 100)."
    )

    @field_validator("phone")
    @classmethod
    def _phone_is_e164(cls, phone: str | None) -> str | None:
        return None if phone is None else e164(phone)

    @field_validator("whatsapp_id")
    @classmethod
    def _whatsapp_id_is_digits(cls, value: str | None) -> str | None:
        return None if value is None else whatsapp_id(value)

    @field_validator("timezone")
    @classmethod
    def _timezone_exists(cls, zone: str | None) -> str | None:
        if zone is not None and zone not in available_timezones():
            raise ValueError(f"unknown time zone {zone!r}; use an IANA name like Europe/Madrid")
        return zone


class ContactPublic(BaseModel):
    external_id: str
    name: str | None
    email: str | None
    phone: str | None
    whatsapp_id: str | None
    chat_id: str | None
    timezone: str | None
    attributes: dict[str, Any]
    last_channel: str | None = Field(description="The channel the contact last wrote from.")
    created_at: datetime
    updated_at: datetime


class GroupPut(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"members": ["u1"]}]})

    members: Annotated[list[EXTERNAL_ID], Field(max_length=10_000)] = Field(
        description="External ids of existing contacts; the group becomes exactly these."
    )


class GroupPublic(BaseModel):
    name: str
    members: list[str]
    updated_at: datetime


class SecretPut(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"value": "s3cr3t-token", "allowed_hosts": ["itsm.example.com"]}]
        },
    )

    value: Annotated[SecretStr, Field(min_length=1, max_length=10_000)]
    allowed_hosts: AllowedHosts | None = Field(
        default=None,
        description="The only hosts the secret is sent to (host names or IP addresses, "
        f"1..{MAX_ALLOWED_HOSTS}); `null` lifts the restriction. Left out, a secret that "
        "exists keeps the hosts it has (a new one has none): changing the value never "
        "widens where it goes.",
    )


class SecretPublic(BaseModel):
    """A secret as listed: its name and where it may go, never its value."""

    name: str
    allowed_hosts: list[str] | None = Field(
        default=None, description="The only hosts it is sent to; null when unrestricted."
    )
    updated_at: datetime


class MessagePublic(BaseModel):
    id: str
    direction: str
    channel: str
    kind: str
    text: str
    body: dict[str, Any]
    source: dict[str, Any] | None
    at: datetime
