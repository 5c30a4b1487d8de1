"""Records and recipients out of integration responses (JMESPath)."""

from __future__ import annotations

from typing import Any

import pytest

from nudge.integrations.extraction import (
    Extraction,
    ExtractionError,
    Skipped,
    extract_records,
    recipient_values,
)

INC001 = {"number": "INC001", "state": "pending_approval", "approver": {"email": "a@x.com"}}
INC002 = {"number": "INC002", "state": "pending_approval", "approver": {"email": "b@x.com"}}
INC003 = {"number": "INC003", "state": "new", "approver": {"email": "c@x.com"}}


def test_records_from_the_api_md_shape_keep_their_order() -> None:
    responses = {"tickets": {"result": [INC002, INC001, INC003]}, "other": {"x": 1}}
    extraction = extract_records("tickets.result", "number", responses)
    assert extraction == Extraction(records={"INC002": INC002, "INC001": INC001, "INC003": INC003})
    assert list(extraction.records) == ["INC002", "INC001", "INC003"]


def test_filters_and_nested_ids_work_across_integrations() -> None:
    responses = {
        "tickets": {"result": [INC001, INC002, INC003]},
        "users": [{"sys": {"id": "u1"}}, {"sys": {"id": "u2"}}],
    }
    pending = extract_records("tickets.result[?state=='pending_approval']", "number", responses)
    assert list(pending.records) == ["INC001", "INC002"]
    users = extract_records("users", "sys.id", responses)
    assert list(users.records) == ["u1", "u2"]


def test_items_without_a_usable_id_are_skipped_and_reported_with_their_index() -> None:
    items: list[Any] = [
        INC001,
        {"state": "new"},  # missing
        {"number": None},
        {"number": ""},
        {"number": "   "},
        {"number": {"value": "INC9"}},
        {"number": ["INC9"]},
        {"number": True},
        "not an object",
        INC002,
    ]
    extraction = extract_records("tickets.result", "number", {"tickets": {"result": items}})
    assert list(extraction.records) == ["INC001", "INC002"]
    assert extraction.skipped == [
        Skipped(1, "reconciliation id 'number' is missing or null"),
        Skipped(2, "reconciliation id 'number' is missing or null"),
        Skipped(3, "reconciliation id 'number' is empty"),
        Skipped(4, "reconciliation id 'number' is empty"),
        Skipped(5, "reconciliation id 'number' is an object, not a string or number"),
        Skipped(6, "reconciliation id 'number' is a list, not a string or number"),
        Skipped(7, "reconciliation id 'number' is a boolean, not a string or number"),
        Skipped(8, "reconciliation id 'number' is missing or null"),
    ]


def test_an_id_that_cannot_be_evaluated_skips_only_that_item() -> None:
    items = [{"tags": ["a", "b"]}, {"tags": "oops"}]
    extraction = extract_records("items", "join('-', tags)", {"x": 1, "items": items})
    assert list(extraction.records) == ["a-b"]
    [skipped] = extraction.skipped
    assert skipped.index == 1
    assert skipped.reason.startswith("reconciliation id \"join('-', tags)\" cannot be evaluated")


def test_a_duplicate_id_is_reported_and_the_first_item_wins() -> None:
    later = {**INC001, "state": "changed"}
    items = [INC001, INC002, later, {"number": 7}, {"number": "7"}]
    extraction = extract_records("r", "number", {"r": items})
    assert extraction.records == {"INC001": INC001, "INC002": INC002, "7": {"number": 7}}
    assert extraction.skipped == [
        Skipped(2, "duplicate reconciliation id 'INC001' (item 0)"),
        Skipped(4, "duplicate reconciliation id '7' (item 3)"),
    ]


def test_numeric_ids_become_strings() -> None:
    items = [{"id": 42}, {"id": 10.0}, {"id": 2.5}, {"id": -3}, {"id": 12345678901234567890}]
    extraction = extract_records("r", "id", {"r": items})
    assert list(extraction.records) == ["42", "10", "2.5", "-3", "12345678901234567890"]
    assert extraction.skipped == []


@pytest.mark.parametrize(
    ("looping_element", "got"),
    [("tickets", "an object"), ("tickets.title", "a string"), ("tickets.count", "a number")],
)
def test_a_looping_element_that_is_not_a_list_is_an_error(looping_element: str, got: str) -> None:
    responses = {"tickets": {"title": "x", "count": 2, "result": []}}
    with pytest.raises(ExtractionError) as caught:
        extract_records(looping_element, "number", responses)
    assert str(caught.value) == f"looping element {looping_element!r} gave {got}, not a list"


def test_a_null_looping_element_gives_no_records() -> None:
    assert extract_records("tickets.result", "number", {"tickets": {}}) == Extraction()
    assert extract_records("tickets.result", "number", {}) == Extraction()
    assert extract_records("tickets.result", "number", {"tickets": {"result": []}}) == Extraction()


def test_invalid_expressions_are_errors_naming_them() -> None:
    with pytest.raises(ExtractionError, match=r"looping element 'tickets\.\[' is not valid"):
        extract_records("tickets.[", "number", {})
    with pytest.raises(ExtractionError, match=r"reconciliation id 'number\]' is not valid"):
        extract_records("r", "number]", {"r": [INC001]})


# --- recipients -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "values"),
    [
        ("approver.email", ["a@x.com"]),
        ("approver.missing", []),
        ("nobody", []),
        ("approver", []),  # an object is not a recipient
        ("vip", []),  # neither is a boolean
        ("employee_id", ["1042"]),
        ("padded", ["u7"]),
        ("blank", []),
        ("watchers", ["u1", "u2", "1042", "u3"]),
        ("approvers[].email", ["a@x.com", "b@x.com"]),
        ("[approver.email, manager.email]", ["a@x.com", "m@x.com"]),
    ],
)
def test_recipient_values_take_strings_and_numbers(expression: str, values: list[str]) -> None:
    record = {
        "approver": {"email": "a@x.com"},
        "manager": {"email": "m@x.com"},
        "vip": True,
        "employee_id": 1042,
        "padded": "  u7 ",
        "blank": " ",
        "watchers": ["u1", "u2", None, "", {"id": "x"}, ["u9"], False, 1042, "u1", " u3 "],
        "approvers": [{"email": "a@x.com"}, {"email": "b@x.com"}, {"name": "no email"}],
    }
    assert recipient_values(expression, record) == values


def test_recipient_values_over_a_recipient_integration_response() -> None:
    response = {"result": [{"email": "a@x.com"}, {"email": "b@x.com"}]}
    assert recipient_values("result[].email", response) == ["a@x.com", "b@x.com"]
    assert recipient_values("result[].email", None) == []


def test_an_invalid_recipient_source_is_an_error() -> None:
    with pytest.raises(ExtractionError, match=r"recipient source 'a\.\.b'"):
        recipient_values("a..b", {})


def test_an_id_longer_than_its_column_is_skipped_while_the_others_go_on() -> None:
    items = [{"number": "X" * 201}, {"number": 10**250}, INC001, {"number": "Y" * 200}]
    extraction = extract_records("tickets.result", "number", {"tickets": {"result": items}})
    assert list(extraction.records) == ["INC001", "Y" * 200]
    assert extraction.skipped == [
        Skipped(0, "reconciliation id 'number' is 201 characters long; at most 200"),
        Skipped(1, "reconciliation id 'number' is a number of 251 digits; at most 200"),
    ]
