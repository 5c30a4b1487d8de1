"""Follow-up definitions: limits, expressions, templates and cross-field rules at save time."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from nudge.models.followups import (
    FOLLOWUP_EXAMPLE,
    FollowUpCopy,
    FollowUpDefinition,
    FollowUpPublic,
    referenced_channel,
    referenced_secrets,
    secret_references,
    template_secrets,
)
from nudge.models.messages import CardMessage
from tests.utils.followups import followup_definition

# Verbatim from design/API.md ("A definition (JSON)"): it must validate as-is.
API_MD_EXAMPLE = """
{
  "name": "Tickets pending approval",
  "status": "active",
  "data_extraction": {
    "polling_minutes": 10,
    "integrations": [
      {"name": "tickets", "method": "GET",
       "url": "https://itsm.example.com/api/tickets?state=pending_approval",
       "headers": {"Authorization": "Bearer {{ secrets.ITSM_TOKEN }}"},
       "timeout_seconds": 30}
    ],
    "set_attributes": [{"scope": "global", "name": "pending_count", "value": "{{ tickets.result | length }}"}],
    "looping_element": "tickets.result",
    "reconciliation_id": "number",
    "record_type": "json"
  },
  "recipients": {
    "user": {"source": "approver.email", "match_on": "email"},
    "group": {"source": "assignment_group", "match_on": "name"}
  },
  "message": {
    "kind": "card",
    "card": {"title": "Approval needed: {{ followup.data.number }}",
             "text": "{{ followup.data.short_description }}",
             "buttons": [{"label": "Approve", "action": "approve"},
                         {"label": "Reject", "action": "reject"}]}
  },
  "channel": "last_used",
  "schedule": {"notify_minutes": 60, "attempts": 3},
  "post_actions": {
    "after_each_attempt": [],
    "after_all_attempts": [{"type": "integration", "integration": {"name": "escalate", "method": "POST", "url": "https://itsm.example.com/api/tickets/{{ followup.data.number }}/escalate"}}]
  },
  "button_actions": {
    "approve": [{"type": "integration", "integration": {"name": "approve", "method": "POST", "url": "https://itsm.example.com/api/tickets/{{ followup.data.number }}/approve"}}]
  },
  "exit": {"on_record_resolved": true, "on_reply": false}
}
"""


def documented() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(API_MD_EXAMPLE)
    return data


def errors_of(data: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as caught:
        FollowUpDefinition.model_validate(data)
    return [dict(e) for e in caught.value.errors()]


def locs(data: dict[str, Any]) -> list[tuple[str | int, ...]]:
    return [tuple(e["loc"]) for e in errors_of(data)]


# The API.md example ---------------------------------------------------------------------------


def test_api_md_example_validates_as_is() -> None:
    defn = FollowUpDefinition.model_validate(documented())

    assert defn.status == "active"
    assert defn.data_extraction.integrations[0].headers == {
        "Authorization": "Bearer {{ secrets.ITSM_TOKEN }}"
    }
    assert defn.recipients.user is not None and defn.recipients.user.match_on == "email"
    assert defn.recipients.group is not None and defn.recipients.group.source == "assignment_group"
    assert isinstance(defn.message, CardMessage)
    assert [b.action for b in defn.message.card.buttons] == ["approve", "reject"]
    assert list(defn.button_actions) == ["approve"]
    assert defn.schedule.notify_minutes == 60 and defn.schedule.attempts == 3
    # What is stored (dumped) validates again to the same definition.
    assert FollowUpDefinition.model_validate(defn.model_dump(mode="json")) == defn


def test_openapi_example_is_the_api_md_example() -> None:
    assert documented() == FOLLOWUP_EXAMPLE
    schema = FollowUpDefinition.model_json_schema()
    assert schema["examples"] == [documented()]
    # The tests' definition is this example too: what they change, they change in it.
    assert followup_definition() == documented()


def test_defaults_for_optional_parts() -> None:
    data = followup_definition()
    for optional in ("status", "post_actions", "button_actions", "exit"):
        del data[optional]
    del data["data_extraction"]["set_attributes"]
    del data["data_extraction"]["record_type"]

    defn = FollowUpDefinition.model_validate(data)

    assert defn.status == "inactive"
    assert defn.post_actions.after_each_attempt == []
    assert defn.post_actions.after_all_attempts == []
    assert defn.button_actions == {}
    assert defn.exit.on_record_resolved is True and defn.exit.on_reply is False
    assert defn.data_extraction.set_attributes == []
    assert defn.data_extraction.record_type == "json"


# Limits ---------------------------------------------------------------------------------------

LIMITS = [
    (("data_extraction", "polling_minutes"), 10, 7200),
    (("schedule", "notify_minutes"), 10, 7200),
    (("schedule", "attempts"), 1, 10),
]


@pytest.mark.parametrize(("path", "low", "high"), LIMITS)
def test_limits_accepted_at_the_bounds(path: tuple[str, str], low: int, high: int) -> None:
    for value in (low, high):
        data = followup_definition()
        data[path[0]][path[1]] = value
        defn = FollowUpDefinition.model_validate(data)
        assert getattr(getattr(defn, path[0]), path[1]) == value


@pytest.mark.parametrize(("path", "low", "high"), LIMITS)
def test_limits_refused_outside_the_bounds(path: tuple[str, str], low: int, high: int) -> None:
    for value, kind in ((low - 1, "greater_than_equal"), (high + 1, "less_than_equal")):
        data = followup_definition()
        data[path[0]][path[1]] = value
        errors = errors_of(data)
        assert [(tuple(e["loc"]), e["type"]) for e in errors] == [(path, kind)]


def test_integrations_between_one_and_ten() -> None:
    data = followup_definition()
    data["data_extraction"]["integrations"] = []
    assert locs(data) == [("data_extraction", "integrations")]

    data = followup_definition()
    first = data["data_extraction"]["integrations"][0]
    data["data_extraction"]["integrations"] = [{**first, "name": f"call{i}"} for i in range(11)]
    assert locs(data) == [("data_extraction", "integrations")]

    data["data_extraction"]["integrations"] = data["data_extraction"]["integrations"][:10]
    assert len(FollowUpDefinition.model_validate(data).data_extraction.integrations) == 10


# Recipients -----------------------------------------------------------------------------------


def test_recipients_need_a_user_or_a_group() -> None:
    data = followup_definition()
    data["recipients"] = {}

    errors = errors_of(data)

    assert [tuple(e["loc"]) for e in errors] == [("recipients",)]
    assert "map a user or a group" in errors[0]["msg"]


@pytest.mark.parametrize("kept", ["user", "group"])
def test_either_recipient_mapping_alone_is_enough(kept: str) -> None:
    data = followup_definition()
    data["recipients"] = {kept: data["recipients"][kept]}

    defn = FollowUpDefinition.model_validate(data)

    assert getattr(defn.recipients, kept) is not None


def test_recipient_match_on_is_checked() -> None:
    data = followup_definition(
        recipients={"user": {"match_on": "name"}, "group": {"match_on": "email"}}
    )

    assert sorted(map(str, locs(data))) == sorted(
        map(str, [("recipients", "user", "match_on"), ("recipients", "group", "match_on")])
    )


def test_recipient_integration_and_attributes() -> None:
    data = followup_definition(
        recipients={
            "integration": {
                "name": "approver",
                "url": "https://itsm.example.com/api/users/{{ followup.data.approver }}",
            },
            "set_attributes": [
                {"scope": "local", "name": "approver_name", "value": "{{ approver.name }}"}
            ],
        }
    )

    defn = FollowUpDefinition.model_validate(data)

    assert defn.recipients.integration is not None
    assert defn.recipients.integration.name == "approver"
    assert defn.recipients.set_attributes[0].name == "approver_name"


# JMESPath -------------------------------------------------------------------------------------


def _set_looping(data: dict[str, Any], expression: str) -> None:
    data["data_extraction"]["looping_element"] = expression


def _set_reconciliation(data: dict[str, Any], expression: str) -> None:
    data["data_extraction"]["reconciliation_id"] = expression


def _set_user_source(data: dict[str, Any], expression: str) -> None:
    data["recipients"]["user"]["source"] = expression


def _set_group_source(data: dict[str, Any], expression: str) -> None:
    data["recipients"]["group"]["source"] = expression


@pytest.mark.parametrize(
    ("place", "loc"),
    [
        (_set_looping, ("data_extraction", "looping_element")),
        (_set_reconciliation, ("data_extraction", "reconciliation_id")),
        (_set_user_source, ("recipients", "user", "source")),
        (_set_group_source, ("recipients", "group", "source")),
    ],
)
@pytest.mark.parametrize("expression", ["tickets.result[", "number..id", "`unclosed"])
def test_bad_jmespath_is_refused_at_its_field(
    place: Callable[[dict[str, Any], str], None], loc: tuple[str, ...], expression: str
) -> None:
    data = followup_definition()
    place(data, expression)

    errors = errors_of(data)

    assert [tuple(e["loc"]) for e in errors] == [loc]
    assert "JMESPath" in errors[0]["msg"]
    assert repr(expression) in errors[0]["msg"]
    assert "\n" not in errors[0]["msg"]


def test_empty_jmespath_is_refused() -> None:
    data = followup_definition(data_extraction={"reconciliation_id": ""})
    assert locs(data) == [("data_extraction", "reconciliation_id")]


def test_valid_jmespath_is_kept_as_written() -> None:
    data = followup_definition(
        data_extraction={"looping_element": "tickets.result[?state=='pending']"},
        recipients={"user": {"source": "approver.emails[0]"}},
    )

    defn = FollowUpDefinition.model_validate(data)

    assert defn.data_extraction.looping_element == "tickets.result[?state=='pending']"
    assert defn.recipients.user is not None
    assert defn.recipients.user.source == "approver.emails[0]"


# Templates ------------------------------------------------------------------------------------


def test_template_typo_in_an_integration_header() -> None:
    data = followup_definition()
    data["data_extraction"]["integrations"][0]["headers"]["Authorization"] = (
        "Bearer {{ secrets.ITSM_TOKEN }"
    )

    errors = errors_of(data)

    assert [tuple(e["loc"]) for e in errors] == [("data_extraction", "integrations", 0, "headers")]
    assert "template does not compile" in errors[0]["msg"]


def test_template_typo_in_a_set_attribute_value() -> None:
    data = followup_definition()
    data["data_extraction"]["set_attributes"][0]["value"] = "{{ tickets.result | length "

    errors = errors_of(data)

    assert [tuple(e["loc"]) for e in errors] == [("data_extraction", "set_attributes", 0, "value")]
    assert "template does not compile" in errors[0]["msg"]


def test_template_typo_in_the_card_title() -> None:
    data = followup_definition(
        message={"card": {"title": "Approval needed: {% if followup.data.number %}"}}
    )

    errors = errors_of(data)

    # The model's path has the union's tag (the second "card"); the API's 422 leaves it out.
    assert [tuple(e["loc"]) for e in errors] == [("message", "card", "card", "title")]
    assert "template does not compile" in errors[0]["msg"]


def test_template_typo_in_a_post_action_and_a_button_action() -> None:
    data = followup_definition()
    data["post_actions"]["after_all_attempts"][0]["integration"]["url"] = "https://x/{{ a"
    data["button_actions"]["approve"].append(
        {"type": "set_attribute", "set_attribute": {"scope": "local", "name": "v", "value": "{{"}}
    )

    assert sorted(map(str, locs(data))) == sorted(
        map(
            str,
            [
                ("post_actions", "after_all_attempts", 0, "integration", "integration", "url"),
                ("button_actions", "approve", 1, "set_attribute", "set_attribute", "value"),
            ],
        )
    )


# Integration names ----------------------------------------------------------------------------


def test_duplicate_integration_names_are_refused() -> None:
    data = followup_definition()
    first = data["data_extraction"]["integrations"][0]
    data["data_extraction"]["integrations"] = [
        first,
        {**first, "name": "users"},
        {**first, "name": "tickets"},
    ]

    errors = errors_of(data)

    assert [tuple(e["loc"]) for e in errors] == [("data_extraction", "integrations", 2, "name")]
    assert errors[0]["type"] == "duplicate_name"
    assert "'tickets'" in errors[0]["msg"]


def test_distinct_integration_names_are_accepted() -> None:
    data = followup_definition()
    first = data["data_extraction"]["integrations"][0]
    data["data_extraction"]["integrations"] = [first, {**first, "name": "users"}]

    defn = FollowUpDefinition.model_validate(data)

    assert [i.name for i in defn.data_extraction.integrations] == ["tickets", "users"]


@pytest.mark.parametrize("name", ["secrets", "followup"])
def test_integration_names_that_templates_use_are_reserved(name: str) -> None:
    data = followup_definition()
    data["data_extraction"]["integrations"][0]["name"] = name
    data["data_extraction"]["looping_element"] = f"{name}.result"
    data["button_actions"]["approve"][0]["integration"]["name"] = name

    errors = errors_of(data)

    assert sorted(map(str, (tuple(e["loc"]) for e in errors))) == sorted(
        map(
            str,
            [
                ("data_extraction", "integrations", 0, "name"),
                ("button_actions", "approve", 0, "integration", "name"),
            ],
        )
    )
    assert {e["type"] for e in errors} == {"reserved_name"}


# Button actions -------------------------------------------------------------------------------


def test_button_action_without_a_matching_button_is_refused() -> None:
    data = followup_definition()
    data["button_actions"]["escalate"] = data["button_actions"]["approve"]

    errors = errors_of(data)

    assert [tuple(e["loc"]) for e in errors] == [("button_actions", "escalate")]
    assert "no button" in errors[0]["msg"]


def test_button_actions_need_a_card_message() -> None:
    data = followup_definition()
    data["message"] = {"kind": "text", "text": "Approve {{ followup.data.number }}"}

    errors = errors_of(data)

    assert [tuple(e["loc"]) for e in errors] == [("button_actions", "approve")]
    assert "not a card" in errors[0]["msg"]


def test_text_message_without_button_actions_is_fine() -> None:
    data = followup_definition()
    data["message"] = {"kind": "text", "text": "Approve {{ followup.data.number }}"}
    data["button_actions"] = {}

    assert FollowUpDefinition.model_validate(data).button_actions == {}


def test_every_button_may_have_actions() -> None:
    data = followup_definition()
    data["button_actions"]["reject"] = [
        {"type": "set_attribute", "set_attribute": {"scope": "local", "name": "r", "value": "1"}}
    ]

    defn = FollowUpDefinition.model_validate(data)

    assert sorted(defn.button_actions) == ["approve", "reject"]


# Unknown fields, channel, copy, public ----------------------------------------------------------


def test_unknown_fields_are_refused() -> None:
    data = followup_definition(colour="blue", schedule={"jitter": 5})

    errors = errors_of(data)

    assert sorted(map(str, (tuple(e["loc"]) for e in errors))) == sorted(
        map(str, [("colour",), ("schedule", "jitter")])
    )
    assert {e["type"] for e in errors} == {"extra_forbidden"}


def test_name_is_required_and_bounded() -> None:
    data = followup_definition()
    data["name"] = ""
    assert locs(data) == [("name",)]
    data["name"] = "x" * 201
    assert locs(data) == [("name",)]
    del data["name"]
    assert locs(data) == [("name",)]


def test_channel_is_a_slug_or_last_used() -> None:
    data = followup_definition()
    data["channel"] = "Ops Webhook"
    assert locs(data) == [("channel",)]

    data["channel"] = "ops-webhook"
    assert referenced_channel(FollowUpDefinition.model_validate(data)) == "ops-webhook"
    last_used = followup_definition(channel="last_used")
    assert referenced_channel(FollowUpDefinition.model_validate(last_used)) is None


def test_copy_takes_only_a_name() -> None:
    assert FollowUpCopy.model_validate({"name": "Copy"}).name == "Copy"
    with pytest.raises(ValidationError) as caught:
        FollowUpCopy.model_validate({"name": "Copy", "status": "active"})
    assert [tuple(e["loc"]) for e in caught.value.errors()] == [("status",)]
    with pytest.raises(ValidationError):
        FollowUpCopy.model_validate({"name": ""})


def test_public_is_the_definition_with_identity() -> None:
    now = datetime(2025, 1, 1, 9, tzinfo=UTC)
    data = followup_definition()
    public = FollowUpPublic.model_validate(
        {**data, "id": "abc", "version": 2, "created_at": now, "updated_at": now}
    )

    assert public.id == "abc" and public.version == 2
    assert public.model_dump(
        exclude={"id", "version", "last_poll", "created_at", "updated_at"}
    ) == (FollowUpDefinition.model_validate(data).model_dump())
    assert FollowUpPublic.model_json_schema()["examples"][0]["name"] == data["name"]


# Secrets --------------------------------------------------------------------------------------


def with_other_secret() -> dict[str, Any]:
    data = followup_definition()
    data["post_actions"]["after_all_attempts"][0]["integration"]["body"] = (
        '{"token": "{{ secrets["OTHER"] }}", "number": "{{ followup.data.number }}"}'
    )
    return data


def test_referenced_secrets_finds_attribute_and_item_access_only() -> None:
    defn = FollowUpDefinition.model_validate(with_other_secret())

    assert referenced_secrets(defn) == {"ITSM_TOKEN", "OTHER"}


def test_referenced_secrets_of_a_definition_without_secrets() -> None:
    data = followup_definition()
    data["data_extraction"]["integrations"][0]["headers"] = {"Accept": "application/json"}

    assert referenced_secrets(FollowUpDefinition.model_validate(data)) == set()


def test_secret_references_give_the_paths_where_secrets_are_used() -> None:
    defn = FollowUpDefinition.model_validate(with_other_secret())

    assert secret_references(defn) == [
        (("body", "data_extraction", "integrations", 0, "headers", "Authorization"), "ITSM_TOKEN"),
        (("body", "post_actions", "after_all_attempts", 0, "integration", "body"), "OTHER"),
    ]
    assert secret_references(defn, prefix=()) == [
        (("data_extraction", "integrations", 0, "headers", "Authorization"), "ITSM_TOKEN"),
        (("post_actions", "after_all_attempts", 0, "integration", "body"), "OTHER"),
    ]


def _query(data: dict[str, Any]) -> None:
    data["data_extraction"]["integrations"][0]["query"] = {"key": "{{ secrets.S }}"}


def _url(data: dict[str, Any]) -> None:
    data["data_extraction"]["integrations"][0]["url"] = "https://x/{{ secrets.S }}"


def _extraction_attribute(data: dict[str, Any]) -> None:
    data["data_extraction"]["set_attributes"][0]["value"] = "{{ secrets.S }}"


def _recipient_integration(data: dict[str, Any]) -> None:
    data["recipients"]["integration"] = {"name": "who", "url": "https://x/{{ secrets.S }}"}


def _recipient_attribute(data: dict[str, Any]) -> None:
    data["recipients"]["set_attributes"] = [
        {"scope": "local", "name": "n", "value": "{{ secrets.S }}"}
    ]


def _card_title(data: dict[str, Any]) -> None:
    data["message"]["card"]["title"] = "{{ secrets.S }}"


def _card_text(data: dict[str, Any]) -> None:
    data["message"]["card"]["text"] = "{{ secrets.S }}"


def _card_image(data: dict[str, Any]) -> None:
    data["message"]["card"]["image_url"] = "https://img/{{ secrets.S }}"


def _button_label(data: dict[str, Any]) -> None:
    data["message"]["card"]["buttons"][1]["label"] = "{{ secrets.S }}"


def _text_message(data: dict[str, Any]) -> None:
    data["message"] = {"kind": "text", "text": "{{ secrets.S }}"}
    data["button_actions"] = {}


def _image_caption(data: dict[str, Any]) -> None:
    data["message"] = {"kind": "image", "image": {"url": "https://i", "caption": "{{ secrets.S }}"}}
    data["button_actions"] = {}


def _each_attempt_attribute(data: dict[str, Any]) -> None:
    data["post_actions"]["after_each_attempt"] = [
        {"type": "set_attribute", "set_attribute": {"scope": "global", "name": "n", "value": ""}},
        {
            "type": "set_attribute",
            "set_attribute": {"scope": "global", "name": "n", "value": "{{ secrets.S }}"},
        },
    ]


def _button_integration_header(data: dict[str, Any]) -> None:
    data["button_actions"]["approve"][0]["integration"]["headers"] = {"X-Key": "{{ secrets.S }}"}


@pytest.mark.parametrize(
    ("place", "loc"),
    [
        (_query, ("data_extraction", "integrations", 0, "query", "key")),
        (_url, ("data_extraction", "integrations", 0, "url")),
        (_extraction_attribute, ("data_extraction", "set_attributes", 0, "value")),
        (_recipient_integration, ("recipients", "integration", "url")),
        (_recipient_attribute, ("recipients", "set_attributes", 0, "value")),
        (
            _each_attempt_attribute,
            ("post_actions", "after_each_attempt", 1, "set_attribute", "value"),
        ),
        (
            _button_integration_header,
            ("button_actions", "approve", 0, "integration", "headers", "X-Key"),
        ),
    ],
)
def test_secret_references_reach_every_template(
    place: Callable[[dict[str, Any]], None], loc: tuple[str | int, ...]
) -> None:
    data = followup_definition()
    data["data_extraction"]["integrations"][0]["headers"] = {}
    place(data)

    defn = FollowUpDefinition.model_validate(data)

    assert secret_references(defn, prefix=()) == [(loc, "S")]
    assert referenced_secrets(defn) == {"S"}


@pytest.mark.parametrize(
    ("place", "loc"),
    [
        (_card_title, ("message", "card", "title")),
        (_card_text, ("message", "card", "text")),
        (_card_image, ("message", "card", "image_url")),
        (_button_label, ("message", "card", "buttons", 1, "label")),
        (_text_message, ("message", "text")),
        (_image_caption, ("message", "image", "caption")),
    ],
)
def test_a_secret_in_a_message_is_refused_at_its_field(
    place: Callable[[dict[str, Any]], None], loc: tuple[str | int, ...]
) -> None:
    # Messages do not see `secrets` (they would render it to the recipient): not saved.
    data = followup_definition()
    place(data)

    with pytest.raises(ValidationError) as caught:
        FollowUpDefinition.model_validate(data)

    [error] = caught.value.errors()
    assert (error["loc"], error["input"]) == (loc, "secrets")


@pytest.mark.parametrize(
    ("source", "names"),
    [
        ("{{ secrets.A }}", ["A"]),
        ("{{ secrets['B'] }}", ["B"]),
        ('{{ secrets.get("C") }}', ["C"]),
        ("{{ secrets.D | default('') }}{% if secrets.E %}x{% endif %}", ["D", "E"]),
        ("{{ secrets.keys() }}", []),
        ("{{ secrets[name] }}", []),
        ("{{ other.secrets.F }}{{ followup.data.number }}{{ tickets['G'] }}", []),
        ("{{ broken", []),
    ],
)
def test_template_secrets(source: str, names: list[str]) -> None:
    assert template_secrets(source) == names
