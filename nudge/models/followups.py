"""Follow-up definitions: what to poll, whom to remind, how often, and what to do afterwards.

Everything a definition holds is checked when it is saved: limits, JMESPath expressions
(compiled), Jinja2 templates (compiled, errors at the field that holds them) and the rules that
tie fields together. What needs the database (secrets, channels) is left to the API, which
uses ``secret_references`` and ``referenced_channel`` to check it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

import jmespath
from jinja2 import TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jmespath.exceptions import JMESPathError
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from nudge.models.channels import CHANNEL_SLUG, LAST_USED
from nudge.models.deliveries import DeliveryState
from nudge.models.integrations import (
    Action,
    Integration,
    IntegrationAction,
    SetAttribute,
    SetAttributeAction,
)
from nudge.models.messages import CardMessage, MessageTemplate
from nudge.models.send_windows import SendWindow
from nudge.models.template_context import FOLLOWUP_NAMES, message_sources, unknown_names
from nudge.models.validation import Loc, located_errors

"""A field path, as in pydantic's and FastAPI's error ``loc``."""

SECRETS = "secrets"
# Names templates already use for other things: an integration named like this would hide them.
RESERVED_INTEGRATION_NAMES = frozenset({SECRETS, "followup"})

FOLLOWUP_EXAMPLE: dict[str, Any] = {
    "name": "Tickets pending approval",
    "status": "active",
    "data_extraction": {
        "polling_minutes": 10,
        "integrations": [
            {
                "name": "tickets",
                "method": "GET",
                "url": "https://itsm.example.com/api/tickets?state=pending_approval",
                "headers": {"Authorization": "Bearer {{ secrets.ITSM_TOKEN }}"},
                "timeout_seconds": 30,
            }
        ],
        "set_attributes": [
            {"scope": "global", "name": "pending_count", "value": "{{ tickets.result | length }}"}
        ],
        "looping_element": "tickets.result",
        "reconciliation_id": "number",
        "record_type": "json",
    },
    "recipients": {
        "user": {"source": "approver.email", "match_on": "email"},
        "group": {"source": "assignment_group", "match_on": "name"},
    },
    "message": {
        "kind": "card",
        "card": {
            "title": "Approval needed: {{ followup.data.number }}",
            "text": "{{ followup.data.short_description }}",
            "buttons": [
                {"label": "Approve", "action": "approve"},
                {"label": "Reject", "action": "reject"},
            ],
        },
    },
    "channel": "last_used",
    "schedule": {"notify_minutes": 60, "attempts": 3},
    "post_actions": {
        "after_each_attempt": [],
        "after_all_attempts": [
            {
                "type": "integration",
                "integration": {
                    "name": "escalate",
                    "method": "POST",
                    "url": "https://itsm.example.com/api/tickets/"
                    "{{ followup.data.number }}/escalate",
                },
            }
        ],
    },
    "button_actions": {
        "approve": [
            {
                "type": "integration",
                "integration": {
                    "name": "approve",
                    "method": "POST",
                    "url": "https://itsm.example.com/api/tickets/"
                    "{{ followup.data.number }}/approve",
                },
            }
        ]
    },
    "exit": {"on_record_resolved": True, "on_reply": False},
}


def _jmespath_compiles(expression: str) -> str:
    try:
        jmespath.compile(expression)
    except JMESPathError as exc:
        # jmespath's messages span lines (the expression and a caret); keep one line.
        reason = " ".join(str(exc).split())
        raise ValueError(f"invalid JMESPath expression {expression!r}: {reason}") from exc
    return expression


JmesPath = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(_jmespath_compiles)]
"""A JMESPath expression, compiled when the definition is saved."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataExtraction(_Strict):
    """How each poll fetches data and splits it into records."""

    polling_minutes: Annotated[int, Field(ge=10, le=7200)] = Field(
        description="Minutes between polls, 10..7200 (5 days)."
    )
    integrations: Annotated[list[Integration], Field(min_length=1, max_length=10)] = Field(
        description="HTTP calls made in order on each poll; each response is available to later "
        "templates and to `looping_element` under the integration's `name` (unique)."
    )
    set_attributes: list[SetAttribute] = Field(
        default_factory=list,
        max_length=50,
        description="Attributes set after the integrations, in order.",
    )
    looping_element: JmesPath = Field(
        description="JMESPath over `{integration name: response JSON}` giving the list of records."
    )
    reconciliation_id: JmesPath = Field(
        description="JMESPath over one record giving its stable id, used to reconcile polls."
    )
    record_type: Literal["json"] = Field(default="json", description="Only `json` for now.")

    @field_validator("integrations")
    @classmethod
    def _names_unique(cls, integrations: list[Integration]) -> list[Integration]:
        seen: set[str] = set()
        problems: list[tuple[Loc, str, str, Any]] = []
        for i, integration in enumerate(integrations):
            if integration.name in seen:
                message = f"another integration is already named {integration.name!r}"
                problems.append(((i, "name"), "duplicate_name", message, integration.name))
            seen.add(integration.name)
        if problems:
            raise located_errors(cls.__name__, problems)
        return integrations


class RecipientMapping(_Strict):
    """How a record names the user to remind."""

    source: JmesPath = Field(
        description="JMESPath over the record (or over the recipient integration's response "
        "when one is given) giving the user's identifier."
    )
    match_on: Literal["external_id", "email", "phone"] = Field(
        description="Which contact field the identifier is matched against."
    )


class GroupMapping(_Strict):
    """How a record names the group whose members are reminded."""

    source: JmesPath = Field(
        description="JMESPath over the record (or over the recipient integration's response "
        "when one is given) giving the group's name."
    )
    match_on: Literal["name"] = Field(default="name", description="Groups match on `name`.")


class Recipients(_Strict):
    """Who is reminded for each record: a user, a group, or both."""

    user: RecipientMapping | None = None
    group: GroupMapping | None = None
    integration: Integration | None = Field(
        default=None,
        description="An optional call made per record to fetch recipient data; its response "
        "becomes the source of the `user` and `group` expressions.",
    )
    set_attributes: list[SetAttribute] = Field(
        default_factory=list,
        max_length=50,
        description="Attributes set after the recipient integration.",
    )

    @model_validator(mode="after")
    def _someone(self) -> Recipients:
        if self.user is None and self.group is None:
            raise ValueError("map a user or a group (or both) to find each record's recipients")
        return self


class Schedule(_Strict):
    """How often and how many times each record's recipients are reminded."""

    notify_minutes: Annotated[int, Field(ge=10, le=7200)] = Field(
        description="Minutes between attempts, 10..7200 (5 days); attempt 1 is sent at once."
    )
    attempts: Annotated[int, Field(ge=1, le=10)] = Field(description="Reminders per record, 1..10.")
    send_window: SendWindow | None = Field(
        default=None,
        description="An attempt that falls outside waits until the window opens (the next"
        " attempt counts from the real send).",
    )


class PostActions(_Strict):
    """Actions run after reminders: an integration call or a set-attribute each."""

    after_each_attempt: list[Action] = Field(default_factory=list, max_length=20)
    after_all_attempts: list[Action] = Field(default_factory=list, max_length=20)


class Exit(_Strict):
    """What ends a record's follow-up before its attempts are done."""

    on_record_resolved: bool = Field(
        default=True, description="A record that no longer appears in a poll ends its follow-up."
    )
    on_reply: bool = Field(default=False, description="A reply from a recipient ends it.")


class FollowUpDefinition(_Strict):
    """A follow-up as an admin writes it (the body of POST and PUT)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [FOLLOWUP_EXAMPLE]})

    name: Annotated[str, Field(min_length=1, max_length=200)]
    status: Literal["active", "inactive"] = Field(
        default="inactive", description="While `active`, the follow-up polls and reminds."
    )
    data_extraction: DataExtraction
    recipients: Recipients
    message: MessageTemplate = Field(
        description="Jinja2 templates; `followup.data` is the record, with its newest data."
    )
    channel: str = Field(
        pattern=f"{CHANNEL_SLUG}|^{LAST_USED}$",
        description="A channel id, or `last_used` for the channel each recipient last wrote from.",
    )
    schedule: Schedule
    post_actions: PostActions = Field(default_factory=PostActions)
    button_actions: dict[
        Annotated[str, Field(max_length=63)], Annotated[list[Action], Field(max_length=20)]
    ] = Field(
        default_factory=dict,
        max_length=10,
        description="For a card message: a button's `action` → the actions run when a recipient "
        "presses it (the record's follow-up then ends).",
    )
    exit: Exit = Field(default_factory=Exit)

    @model_validator(mode="after")
    def _consistent(self) -> FollowUpDefinition:
        problems: list[tuple[Loc, str, str, Any]] = []
        buttons = (
            {b.action for b in self.message.card.buttons}
            if isinstance(self.message, CardMessage)
            else set()
        )
        for key in self.button_actions:
            if key in buttons:
                continue
            if isinstance(self.message, CardMessage):
                message = f"the card has no button with action {key!r}"
            else:
                message = "only a card message has buttons; this message is not a card"
            problems.append((("button_actions", key), "unknown_button_action", message, key))
        for loc, integration in _integrations(self):
            if integration.name in RESERVED_INTEGRATION_NAMES:
                message = f"{integration.name!r} is reserved for templates; choose another name"
                problems.append(((*loc, "name"), "reserved_name", message, integration.name))
        problems += unknown_names(self.message, FOLLOWUP_NAMES)
        if problems:
            raise located_errors(type(self).__name__, problems)
        return self


class FollowUpPublic(FollowUpDefinition):
    """A stored follow-up definition."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id": "3f2b6c1e9a0d4e7f8b1c2d3e4f5a6b7c",
                    "version": 1,
                    **FOLLOWUP_EXAMPLE,
                    "created_at": "2025-01-01T09:00:00Z",
                    "updated_at": "2025-01-01T09:00:00Z",
                }
            ]
        },
    )

    id: str
    version: int = Field(description="Goes up by one on every change.")
    last_poll: dict[str, Any] | None = Field(
        default=None,
        description="What the newest poll found (records skipped for lacking an id included), "
        "or why it failed.",
    )
    created_at: datetime
    updated_at: datetime


class FollowUpCopy(_Strict):
    """The name of the copy; everything else, status included, comes from the source."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "Tickets pending approval (2)"}]}
    )

    name: Annotated[str, Field(min_length=1, max_length=200)]


# Save-time helpers for the API ---------------------------------------------------------------


def _actions(
    defn: FollowUpDefinition,
) -> Iterator[tuple[Loc, IntegrationAction | SetAttributeAction]]:
    post = defn.post_actions
    for when, actions in (
        ("after_each_attempt", post.after_each_attempt),
        ("after_all_attempts", post.after_all_attempts),
    ):
        for i, action in enumerate(actions):
            yield ("post_actions", when, i), action
    for key, actions in defn.button_actions.items():
        for i, action in enumerate(actions):
            yield ("button_actions", key, i), action


def _integrations(defn: FollowUpDefinition) -> Iterator[tuple[Loc, Integration]]:
    for i, integration in enumerate(defn.data_extraction.integrations):
        yield ("data_extraction", "integrations", i), integration
    if defn.recipients.integration is not None:
        yield ("recipients", "integration"), defn.recipients.integration
    for loc, action in _actions(defn):
        if isinstance(action, IntegrationAction):
            yield (*loc, "integration"), action.integration


def _integration_templates(loc: Loc, integration: Integration) -> Iterator[tuple[Loc, str]]:
    yield (*loc, "url"), integration.url
    for header, source in integration.headers.items():
        yield (*loc, "headers", header), source
    for param, source in integration.query.items():
        yield (*loc, "query", param), source
    if integration.body is not None:
        yield (*loc, "body"), integration.body


def template_sources(defn: FollowUpDefinition) -> Iterator[tuple[Loc, str]]:
    """Every Jinja2 template in ``defn``, with its path in the definition's JSON."""
    extraction = defn.data_extraction
    for i, integration in enumerate(extraction.integrations):
        yield from _integration_templates(("data_extraction", "integrations", i), integration)
    for i, attribute in enumerate(extraction.set_attributes):
        yield ("data_extraction", "set_attributes", i, "value"), attribute.value
    if defn.recipients.integration is not None:
        yield from _integration_templates(
            ("recipients", "integration"), defn.recipients.integration
        )
    for i, attribute in enumerate(defn.recipients.set_attributes):
        yield ("recipients", "set_attributes", i, "value"), attribute.value
    yield from message_sources(defn.message)
    for loc, action in _actions(defn):
        if isinstance(action, IntegrationAction):
            yield from _integration_templates((*loc, "integration"), action.integration)
        else:
            yield (*loc, "set_attribute", "value"), action.set_attribute.value


_parser = ImmutableSandboxedEnvironment()


def _is_secrets(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Name) and node.name == SECRETS


def _const_str(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Const) and isinstance(node.value, str):
        return node.value
    return None


def template_secrets(source: str) -> list[str]:
    """Secret names a template reads: ``secrets.NAME``, ``secrets["NAME"]``,
    ``secrets.get("NAME")``, in order of appearance (a computed name cannot be known)."""
    try:
        tree = _parser.parse(source)
    except TemplateSyntaxError:
        return []  # Validation refuses such a template; nothing to report here.
    names: list[str] = []
    methods: set[int] = set()  # `secrets.get` in `secrets.get("X")` is a method, not a secret.
    for node in tree.find_all((nodes.Call, nodes.Getattr, nodes.Getitem)):
        # find_all is pre-order: a call is seen before the attribute it calls.
        if isinstance(node, nodes.Call):
            target = node.node
            if isinstance(target, nodes.Getattr) and _is_secrets(target.node):
                methods.add(id(target))
                name = _const_str(node.args[0]) if target.attr == "get" and node.args else None
                if name is not None:
                    names.append(name)
        elif isinstance(node, nodes.Getattr):
            if _is_secrets(node.node) and id(node) not in methods:
                names.append(node.attr)
        elif isinstance(node, nodes.Getitem) and _is_secrets(node.node):
            name = _const_str(node.arg)
            if name is not None:
                names.append(name)
    return names


def secret_references(defn: FollowUpDefinition, prefix: Loc = ("body",)) -> list[tuple[Loc, str]]:
    """Each (field path, secret name) used by ``defn``'s templates, the path starting with
    ``prefix`` (FastAPI's request-body location by default), for 422 problems."""
    return [
        ((*prefix, *loc), name)
        for loc, source in template_sources(defn)
        for name in template_secrets(source)
    ]


def referenced_secrets(defn: FollowUpDefinition) -> set[str]:
    """The names of every secret ``defn``'s templates read."""
    return {name for _, name in secret_references(defn, prefix=())}


def referenced_channel(defn: FollowUpDefinition) -> str | None:
    """The channel id ``defn`` sends on, or None when it uses each recipient's last channel."""
    return None if defn.channel == LAST_USED else defn.channel


class FollowUpRecordPublic(BaseModel):
    """One record a follow-up found, and how its reminders are going."""

    reconciliation_id: str
    state: str = Field(description="following, resolved, completed or stopped")
    attempts_made: int
    next_attempt_at: datetime | None
    data: dict[str, Any] = Field(description="The record's newest data.")
    version: int = Field(description="The definition version this run follows.")
    problems: dict[str, Any] = Field(description="Unmatched recipients and failed sends.")
    ended_by: str | None
    end_reason: str | None
    first_seen_at: datetime
    ended_at: datetime | None
    deliveries: list[DeliveryState] = Field(
        default=[],
        description="In lists: the record's newest reminders (up to 20), each with what its"
        " provider said of it (delivered, read, failed, replied).",
    )


class RecordStop(BaseModel):
    """Stop reminding about one record."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(min_length=1, max_length=500)] = "stopped through the API"


class PressRecorded(BaseModel):
    """A card button press, recorded: its actions run, then the follow-up ends."""

    status: str
    action: str
    reconciliation_id: str
