"""API keys as admins manage them: listed by prefix, shown in full only when created."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

KeyRole = Literal["admin", "service", "agent"]


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"role": "service"}, {"role": "agent", "agent": "grace"}]},
    )

    role: KeyRole
    agent: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        default=None, description="For `agent` keys: the agent the key belongs to."
    )

    @model_validator(mode="after")
    def _agent_only_for_agent_keys(self) -> ApiKeyCreate:
        if self.agent is not None and self.role != "agent":
            raise ValueError("`agent` is for keys with role `agent`")
        return self


class ApiKeyPublic(BaseModel):
    """A key as listed: never the key itself."""

    id: str
    prefix: str = Field(description="The key's first characters, to tell keys apart.")
    role: KeyRole
    agent: str | None
    created_at: datetime
    last_used_at: datetime | None = Field(description="To the minute.")


class ApiKeyCreated(ApiKeyPublic):
    api_key: str = Field(description="The key. Shown this once: Nudge keeps only its hash.")
