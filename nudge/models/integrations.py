"""Integrations (one templated HTTP call), Set Attributes and post-actions.

Shared by follow-ups (data extraction, recipients, post-actions, button actions) and
journeys (`http_request` steps). Templates are Jinja2, compiled when a definition is saved.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nudge.templating import check_template

INTEGRATION_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]

HeaderName = Annotated[str, Field(min_length=1, max_length=200)]
TemplateText = Annotated[str, Field(max_length=4_000)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Integration(_Strict):
    """One HTTP call. Its JSON response is available to later templates under ``name``."""

    name: Annotated[str, Field(pattern=INTEGRATION_NAME, description="Names the response.")]
    method: HttpMethod = "GET"
    url: Annotated[str, Field(min_length=1, max_length=2000, description="A template.")]
    headers: dict[HeaderName, TemplateText] = Field(
        default_factory=dict, max_length=50, description="Values are templates."
    )
    query: dict[HeaderName, TemplateText] = Field(
        default_factory=dict, max_length=50, description="Values are templates."
    )
    body: Annotated[str, Field(max_length=100_000)] | None = Field(
        default=None, description="A template that renders to JSON (sent as application/json)."
    )
    timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 30
    expected_status: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=list,
        max_length=20,
        description="Statuses that count as success; default any 2xx.",
    )

    @field_validator("url", "body")
    @classmethod
    def _template_compiles(cls, source: str | None) -> str | None:
        return None if source is None else check_template(source)

    @field_validator("headers", "query")
    @classmethod
    def _templates_compile(cls, values: dict[str, str]) -> dict[str, str]:
        for source in values.values():
            check_template(source)
        return values


class SetAttribute(_Strict):
    """Assign a template's value to an attribute: this run's, the tenant's, or the contact's."""

    scope: Literal["local", "global", "contact"]
    name: Annotated[str, Field(pattern=INTEGRATION_NAME)]
    value: Annotated[str, Field(max_length=10_000, description="A template.")]

    @field_validator("value")
    @classmethod
    def _template_compiles(cls, source: str) -> str:
        return check_template(source)


class IntegrationAction(_Strict):
    type: Literal["integration"]
    integration: Integration


class SetAttributeAction(_Strict):
    type: Literal["set_attribute"]
    set_attribute: SetAttribute


Action = Annotated[IntegrationAction | SetAttributeAction, Field(discriminator="type")]
