"""The inbox: agents, queues and access profiles (admins), interactions and notes (agents),
and the service metrics computed from what agents did.

An interaction is one conversation of a contact on one channel, from its first incoming
message (or an agent's outbound email or SMS) until an agent ends it. Its status:

- `new`: no agent has answered yet; it waits in its queue;
- `resolved`: an agent answered the contact's last message (or marked it resolved); out of
  the queue;
- `open`: the contact wrote again after an agent's answer; back in the queue;
- `ended`: an agent ended it; unassigned and out of the queue. The contact's next message
  opens a new interaction (a new case number) for any agent of the queue.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from nudge.models.channels import CHANNEL_SLUG
from nudge.models.directory import EXTERNAL_ID
from nudge.models.email_address import EmailAddress

# Queues and access profiles are named like channels; agents like the `agent` of API keys
# (an email address works), since an agent key names its agent by this id.
QUEUE_ID = CHANNEL_SLUG
PROFILE_ID = CHANNEL_SLUG
AGENT_ID = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,199}$"
DEFAULT_QUEUE = "default"

Module = Literal["inbox", "journeys", "followups", "campaigns", "metrics", "settings"]
MODULES: tuple[Module, ...] = ("inbox", "journeys", "followups", "campaigns", "metrics", "settings")

Status = Literal["new", "open", "resolved", "ended"]
OPEN_STATUSES: tuple[Status, ...] = ("new", "open", "resolved")
Priority = Literal["low", "normal", "high", "urgent"]
PRIORITY_RANK: dict[str, int] = {"low": 0, "normal": 1, "high": 2, "urgent": 3}
ChannelKind = Literal["chat", "email", "facebook", "instagram", "sms", "twitter", "whatsapp"]
# The order of `sort=channel` (the inbox groups interactions by channel in this order).
CHANNEL_ORDER: tuple[ChannelKind, ...] = (
    "chat",
    "email",
    "facebook",
    "instagram",
    "sms",
    "twitter",
    "whatsapp",
)
# What kind of conversation each channel type carries; anything else (a channel the events
# API names but nobody configured) is a chat.
KIND_OF_CHANNEL_TYPE: dict[str, ChannelKind] = {
    "webhook": "chat",
    "log": "chat",
    "slack": "chat",
    "email": "email",
    "sms": "sms",
    "whatsapp": "whatsapp",
}
# Where an agent may start a conversation (`POST /v1/interactions`).
OUTBOUND_CHANNEL_TYPES = ("email", "sms")
Sort = Literal["received", "priority", "channel"]
MetricsGroupBy = Literal["queue", "agent", "day"]

MAX_REPLY = 4_096  # WhatsApp's limit for a text; longer answers belong in several messages
MAX_NOTE = 4_000


def _distinct(values: list[Any]) -> list[Any]:
    if len(set(values)) != len(values):
        raise ValueError("each value once")
    return values


def _trimmed_tags(tags: list[str]) -> list[str]:
    cleaned = [tag.strip() for tag in tags]
    if any(not tag for tag in cleaned):
        raise ValueError("a tag cannot be blank")
    return list(dict.fromkeys(cleaned))


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Admin: access profiles, queues, agents --------------------------------------------------------


class AccessProfilePut(_Request):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Front line",
                    "description": "Answers customers; sees journeys in progress",
                    "modules": ["inbox", "journeys"],
                }
            ]
        },
    )

    name: Annotated[str, Field(min_length=1, max_length=200)]
    description: Annotated[str, Field(max_length=1_000)] = ""
    modules: Annotated[list[Module], Field(max_length=len(MODULES)), AfterValidator(_distinct)] = (
        Field(description="What agents with this profile may use; `inbox` opens the inbox.")
    )


class AccessProfilePublic(BaseModel):
    id: str
    name: str
    description: str
    modules: list[Module]
    updated_at: datetime


class QueuePut(_Request):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"name": "Sales", "default_for_channels": ["wa-main", "sms-main"]}]
        },
    )

    name: Annotated[str, Field(min_length=1, max_length=200)]
    default_for_channels: Annotated[
        list[Annotated[str, Field(pattern=CHANNEL_SLUG)]],
        Field(max_length=50),
        AfterValidator(_distinct),
    ] = Field(
        default=[],
        description="Channels whose new interactions go to this queue (a channel has at most"
        " one default queue; without one, they go to `default`).",
    )


class QueuePublic(BaseModel):
    id: str
    name: str
    default_for_channels: list[str]
    agents: list[str] = Field(description="The ids of the agents in this queue.")
    updated_at: datetime


class AgentPut(_Request):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Grace Hopper",
                    "email": "grace@example.com",
                    "queues": ["default", "sales"],
                    "profile": "front-line",
                }
            ]
        },
    )

    name: Annotated[str, Field(min_length=1, max_length=200)]
    email: EmailAddress
    queues: Annotated[
        list[Annotated[str, Field(pattern=QUEUE_ID)]],
        Field(max_length=100),
        AfterValidator(_distinct),
    ] = Field(default=[], description="The queues whose interactions the agent works on.")
    profile: Annotated[str, Field(pattern=PROFILE_ID)] | None = Field(
        default=None,
        description="An access profile; without one the agent may use every module.",
    )


class AgentPublic(BaseModel):
    id: str = Field(description="The agent's id: the `agent` of their API keys.")
    name: str
    email: str
    queues: list[str]
    profile: str | None
    updated_at: datetime


# Agents: interactions ---------------------------------------------------------------------


class ReplyCreate(_Request):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"text": "Hi!"}]})

    text: Annotated[str, Field(min_length=1, max_length=MAX_REPLY)] = Field(
        description="Sent as written (no template) on the interaction's channel."
    )


class InteractionCreate(_Request):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"contact_id": "ada", "channel": "email", "text": "Your order has shipped."}
            ]
        },
    )

    contact_id: EXTERNAL_ID
    channel: Annotated[str, Field(pattern=CHANNEL_SLUG)] = Field(
        description="An `email` or `sms` channel."
    )
    text: Annotated[str, Field(min_length=1, max_length=MAX_REPLY)]


class TransferRequest(_Request):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"queue": "sales"}]})

    queue: Annotated[str, Field(pattern=QUEUE_ID)]


class Disposition(_Request):
    case: Annotated[str, Field(max_length=200)] | None = Field(
        default=None, description="The case in your systems this interaction was about."
    )
    related_to: Annotated[str, Field(max_length=200)] | None = Field(
        default=None, description="The account or lead it relates to."
    )
    notes: Annotated[str, Field(max_length=MAX_NOTE)] | None = Field(
        default=None,
        description="Kept as one of your notes on the contact: only you see them.",
    )


class EndRequest(_Request):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"disposition": {"case": "CS-1042", "related_to": "Acme", "notes": "Refunded"}}
            ]
        },
    )

    disposition: Disposition = Field(default_factory=Disposition)


class TagsPut(_Request):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"tags": ["billing", "vip"]}]}
    )

    tags: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=50)]],
        Field(max_length=20),
        AfterValidator(_trimmed_tags),
    ]


class PriorityPut(_Request):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"priority": "high"}]}
    )

    priority: Priority


class InteractionPublic(BaseModel):
    id: str
    case_number: int = Field(description="The tenant's case number, increasing.")
    contact_id: str = Field(description="The contact's external id.")
    contact_name: str | None
    channel: str
    channel_kind: ChannelKind
    digital_id: str | None = Field(
        description="How the channel knows the contact: a phone number (SMS), a WhatsApp id,"
        " an email address, a chat id (else the external id)."
    )
    queue: str
    assignee: str | None = Field(description="The agent working on it.")
    status: Status
    priority: Priority
    tags: list[str]
    unread: int = Field(description="The contact's messages since its agent last opened it.")
    preview: str = Field(description="The start of the contact's newest message.")
    outbound: bool = Field(description="Started by an agent (`POST /v1/interactions`).")
    created_at: datetime
    received_at: datetime = Field(
        description="When the contact's newest message came (for one an agent started: when"
        " it started)."
    )
    updated_at: datetime
    ended_at: datetime | None
    ended_by: str | None
    disposition: Disposition | None


class ConversationMessage(BaseModel):
    id: str
    direction: Literal["incoming", "outgoing"]
    kind: str
    text: str
    at: datetime
    agent: str | None = Field(description="For an agent's reply: who wrote it.")


class InteractionEventPublic(BaseModel):
    kind: str = Field(
        description="queued, assigned, replied, first_response, resolved, reopened,"
        " transferred, routed, unassigned, outbound or ended."
    )
    at: datetime
    queue: str
    agent: str | None
    seconds: float | None = Field(description="The time the event measures, if any.")
    outcome: str | None
    detail: dict[str, Any] | None


class NoteCreate(_Request):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"text": "Prefers email in the morning"}]}
    )

    text: Annotated[str, Field(min_length=1, max_length=MAX_NOTE)]
    interaction_id: Annotated[str, Field(max_length=32)] | None = None


class NotePublic(BaseModel):
    id: str
    contact_id: str
    agent: str
    text: str
    interaction_id: str | None
    created_at: datetime


class InteractionDetail(InteractionPublic):
    conversation: list[ConversationMessage] = Field(
        description="The contact's messages on this channel since the interaction began,"
        " oldest first (the newest 200)."
    )
    conversation_complete: bool = Field(description="False when older messages were left out.")
    notes: list[NotePublic] = Field(description="Your own notes on the contact, newest first.")
    history: list[InteractionEventPublic] = Field(
        description="What happened to the interaction, oldest first (the first 200)."
    )


# Admin: service metrics -------------------------------------------------------------------


class ServiceMetricsRow(BaseModel):
    key: str | None = Field(description="The queue, the agent (null: no agent) or the UTC day.")
    offered: int = Field(
        description="Interactions that entered a queue (by agent: that were assigned to them)."
    )
    closed: int = Field(description="Interactions ended.")
    attended: int = Field(
        description="Ended by an agent after answering, or transferred by an agent."
    )
    abandoned: int = Field(description="Ended after being assigned, without an agent's answer.")
    lost: int = Field(description="Ended without ever being assigned in that queue.")
    transferred: int
    average_handling_seconds: float | None = Field(
        description="From assignment to end or transfer."
    )
    average_queue_seconds: float | None = Field(
        description="From entering the queue to assignment."
    )
    average_first_response_seconds: float | None = Field(
        description="From entering the queue to an agent's first answer there."
    )
    average_response_seconds: float | None = Field(
        description="From the contact's oldest unanswered message to the agent's answer."
    )


class ServiceMetricsList(BaseModel):
    """The period's figures, one item per group, in the order of `key` (null last). Each
    figure counts what happened in the period: an interaction offered in March and ended in
    April counts as offered in March and closed in April."""

    model_config = ConfigDict(populate_by_name=True)

    group_by: MetricsGroupBy
    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")
    items: list[ServiceMetricsRow]
