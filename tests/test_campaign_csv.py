"""A campaign's CSV is checked completely, streamed, with every problem at its line."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from nudge.models.campaign_csv import (
    EMPTY_PARAMETER,
    MAX_COLUMNS,
    MAX_FIELD_CHARS,
    NOT_UTF8,
    CheckedCsv,
    CheckedRow,
    RowUseProblem,
    check_csv,
    columns_used,
)
from nudge.models.campaigns import MAX_PROBLEMS, CampaignCreate
from nudge.models.messages import parse_message

SENDERS = ("wa-main", "wa-spain")


def campaign(text: str = "Hi {{ row.name }}", **fields: Any) -> CampaignCreate:
    data: dict[str, Any] = {
        "name": "December",
        "recipient_column": "phone",
        "channel": "wa-main",
        "message": {"kind": "text", "text": text},
    }
    data.update(fields)
    if "sender_column" in fields:
        data["channel"] = None
    return CampaignCreate.model_validate(data)


def check(data: str | bytes, spec: CampaignCreate | None = None, chunk: int = 65_536) -> CheckedCsv:
    raw = data.encode() if isinstance(data, str) else data
    chunks = [raw[i : i + chunk] for i in range(0, len(raw), chunk)]
    return check_csv(chunks, spec or campaign(), SENDERS)


def problems(result: CheckedCsv) -> list[tuple[int, str | None, str]]:
    return [(p.line, p.column, p.reason) for p in result.problems]


def one_byte_at_a_time(data: bytes) -> Iterator[bytes]:
    for i in range(len(data)):
        yield data[i : i + 1]


# --- a good file ---


def test_a_good_file_gives_every_row_with_its_recipient_and_values() -> None:
    result = check("phone,name\n+34600111222,Ana\n+34 600 11 12 33,Bo\n")
    assert result.ok and result.problems == [] and result.total_problems == 0
    assert result.header == ["phone", "name"]
    assert result.rows == [
        CheckedRow(2, "+34600111222", None, {"phone": "+34600111222", "name": "Ana"}),
        CheckedRow(3, "+34600111233", None, {"phone": "+34 600 11 12 33", "name": "Bo"}),
    ]
    assert result.duplicates == []


def test_a_utf8_bom_is_dropped() -> None:
    result = check(b"\xef\xbb\xbfphone,name\n+34600111222,Ana\n")
    assert result.ok and result.header == ["phone", "name"]


def test_a_bom_split_across_chunks_is_dropped() -> None:
    data = b"\xef\xbb\xbfphone,name\n+34600111222,Jos\xc3\xa9\n"
    result = check_csv(one_byte_at_a_time(data), campaign(), SENDERS)
    assert result.ok and result.header == ["phone", "name"]
    assert result.rows[0].values["name"] == "José"


def test_a_multibyte_character_split_by_every_chunk_boundary() -> None:
    data = "phone,name\r\n+34600111222,José €5 ✓ 😀\r\n+34600111233,Zoë\r\n".encode()
    result = check_csv(one_byte_at_a_time(data), campaign(), SENDERS)
    assert result.ok
    assert [(r.line, r.values["name"]) for r in result.rows] == [
        (2, "José €5 ✓ 😀"),
        (3, "Zoë"),
    ]


def test_chunks_of_any_size_give_the_same_result() -> None:
    data = 'phone,name\r\n+34600111222,"Ana\r\nMaría"\r+34 12,x\n\n+34600111233,Zoë\n'
    expected = check(data)
    for size in (1, 2, 3, 5, 7, 64):
        assert check(data, chunk=size) == expected
    assert [r.line for r in expected.rows] == [2, 6]
    assert problems(expected) == [(4, "phone", "'+34 12' is not a valid phone number")]


@pytest.mark.parametrize("separator", [";", "|"])
def test_other_separators(separator: str) -> None:
    data = f"phone{separator}name\n+34600111222{separator}Ana, María\n"
    result = check(data, campaign(separator=separator))
    assert result.ok
    assert result.rows[0].values == {"phone": "+34600111222", "name": "Ana, María"}


def test_a_quoted_value_may_hold_the_separator_and_quotes() -> None:
    result = check('phone,name\n+34600111222,"Smith, John ""JJ"""\n')
    assert result.ok
    assert result.rows[0].values["name"] == 'Smith, John "JJ"'


def test_a_value_spanning_lines_counts_them_for_the_rows_after_it() -> None:
    data = (
        "phone,name,note\n"  # 1
        '+34600111222,Ana,"first\n'  # 2
        "second\n"  # 3
        'third"\n'  # 4
        "+34 12,Bo,x\n"  # 5
        '+34600111233,"Cy\r\nCy",y\n'  # 6-7
        "+34600111244,,z\n"  # 8
    )
    result = check(data, campaign("{{ row.name }} {{ row.note }}"))
    assert [r.line for r in result.rows] == [2, 6]
    assert result.rows[0].values["note"] == "first\nsecond\nthird"
    assert result.rows[1].values["name"] == "Cy\r\nCy"
    assert problems(result) == [
        (5, "phone", "'+34 12' is not a valid phone number"),
        (8, "name", EMPTY_PARAMETER),
    ]


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"])
def test_every_line_ending_counts_as_a_line(ending: str) -> None:
    data = ending.join(["phone,name", "+34600111222,Ana", "", "+34 12,Bo", "+34600111233,Cy"])
    for chunk in (1, 65_536):
        result = check(data, chunk=chunk)
        assert [r.line for r in result.rows] == [2, 5]
        assert [p.line for p in result.problems] == [4]


def test_blank_lines_and_rows_of_blank_values_are_skipped() -> None:
    result = check("\nphone,name\n\n+34600111222,Ana\n,\n  ,  \n+34600111233,Bo\n\n")
    assert result.ok
    assert [r.line for r in result.rows] == [4, 7]


# --- UTF-8 ---


def test_latin1_bytes_are_one_problem_at_their_line_and_stop_the_check() -> None:
    data = b"phone,name\n+34600111222,Ana\n+34600111233,Jos\xe9\n+34 12,x\n+34 13,y\n"
    result = check(data)
    assert problems(result) == [(3, None, NOT_UTF8)]
    assert result.total_problems == 1
    assert [r.line for r in result.rows] == [2]  # the rows before it were checked


def test_invalid_utf8_split_across_chunks_is_found_at_its_line() -> None:
    data = b"phone,name\n+34600111222,Ana\n+34 12,x\n+34600111233,\xc3(\n"
    result = check_csv(one_byte_at_a_time(data), campaign(), SENDERS)
    assert problems(result) == [
        (3, "phone", "'+34 12' is not a valid phone number"),
        (4, None, NOT_UTF8),
    ]


def test_invalid_utf8_inside_a_value_spanning_lines_is_at_the_byte_s_line() -> None:
    data = b'phone,name\n+34600111222,"Ana\nline two\nJos\xe9"\n'
    assert problems(check(data)) == [(4, None, NOT_UTF8)]


def test_a_character_cut_at_the_end_of_the_file_is_not_utf8() -> None:
    assert problems(check(b"phone,name\n+34600111222,Jos\xc3")) == [(2, None, NOT_UTF8)]


# --- the header ---


@pytest.mark.parametrize("data", ["", "\n\n", ",,\n"])
def test_a_file_without_a_header(data: str) -> None:
    result = check(data)
    assert problems(result) == [
        (1, None, "the file is empty: its first line must name the columns")
    ]


def test_header_names_are_stripped() -> None:
    result = check(" phone , name \n+34600111222,Ana\n")
    assert result.ok and result.header == ["phone", "name"]


def test_missing_columns_are_named_at_line_1() -> None:
    spec = campaign("{{ row.name }} owes {{ row.amount }}", sender_column="from")
    result = check("telephone,name\n+34600111222,Ana\n", spec)
    assert [(p.line, p.column) for p in result.problems] == [
        (1, "phone"),
        (1, "from"),
        (1, "amount"),
    ]
    reasons = [p.reason for p in result.problems]
    assert (
        reasons[0] == "no column 'phone' (the recipient column); the header has 'telephone', 'name'"
    )
    assert reasons[1].startswith("no column 'from' (the sender column)")
    assert reasons[2].startswith("no column 'amount' (the message uses it in message.text)")
    assert result.rows == []  # without a recipient column no row can be sent


def test_rows_are_still_checked_when_the_header_has_problems() -> None:
    spec = campaign("{{ row.name }} {{ row.amount }}")
    result = check("phone,name\n+34 12,Ana\n+34600111222,\n", spec)
    missing = "no column 'amount' (the message uses it in message.text); the header has"
    assert problems(result) == [
        (1, "amount", f"{missing} 'phone', 'name'"),
        (2, "phone", "'+34 12' is not a valid phone number"),
        (3, "name", EMPTY_PARAMETER),
    ]


def test_duplicate_and_blank_header_names() -> None:
    result = check("phone,name,,name\n+34600111222,Ana,x,y\n")
    assert problems(result) == [
        (1, None, "column 3 has no name"),
        (1, "name", "column 'name' appears twice (columns 2 and 4)"),
    ]
    assert not result.ok


def test_too_many_columns() -> None:
    header = ",".join(f"c{i}" for i in range(MAX_COLUMNS + 1))
    result = check(f"{header}\n")
    assert problems(result) == [(1, None, f"{MAX_COLUMNS + 1} columns: at most {MAX_COLUMNS}")]


def test_as_many_columns_as_allowed() -> None:
    header = ",".join(["phone", "name", *(f"c{i}" for i in range(MAX_COLUMNS - 2))])
    row = ",".join(["+34600111222", "Ana", *("x" for _ in range(MAX_COLUMNS - 2))])
    assert check(f"{header}\n{row}\n").ok


# --- rows ---


def test_the_wrong_number_of_values() -> None:
    result = check("phone,name\n+34600111222,Smith, John\n+34600111233\n+34600111244,Cy\n")
    hint = "(a value holding the separator ',' must be in double quotes)"
    assert problems(result) == [
        (2, None, f"3 values, the header has 2 columns {hint}"),
        (3, None, f"1 value, the header has 2 columns {hint}"),
    ]
    assert [r.line for r in result.rows] == [4]


def test_a_value_too_long() -> None:
    long = "x" * (MAX_FIELD_CHARS + 1)
    result = check(f"phone,name\n+34600111222,{long}\n+34600111233,{long[1:]}\n")
    assert problems(result) == [(2, "name", f"value over {MAX_FIELD_CHARS} characters")]
    assert [r.line for r in result.rows] == [3]


def test_a_quote_never_closed() -> None:
    result = check('phone,name\n+34600111222,"Ana\n+34600111233,Bo\n')
    assert problems(result) == [
        (2, None, 'a quoted value is never closed (a closing " is missing)')
    ]


def test_a_runaway_quote_stops_the_check() -> None:
    # The csv module gives up at 131 072 characters; what follows is inside the value.
    data = 'phone,name\n+34600111222,Ana\n+34600111233,"Bo\n' + "+34 12,x\n" * 20_000
    result = check(data)
    assert problems(result) == [
        (
            3,
            None,
            f"a value over {MAX_FIELD_CHARS} characters, or a quoted value is never closed"
            ' (a closing " is missing)',
        )
    ]
    assert [r.line for r in result.rows] == [2]


def test_text_after_a_closing_quote_is_not_valid_csv_and_the_check_goes_on() -> None:
    result = check('phone,name\n+34600111222,"Ana"x\n+34 12,Bo\n')
    assert problems(result) == [
        (2, None, "not valid CSV: ',' expected after '\"'"),
        (3, "phone", "'+34 12' is not a valid phone number"),
    ]


@pytest.mark.parametrize(
    ("phone", "reason"),
    [
        ("+34 12", "'+34 12' is not a valid phone number"),
        ("600111222", "must be an international phone number such as +34600111222"),
        ("(600) 111-222", "must be an international phone number such as +34600111222"),
        ("not a phone", "must be an international phone number such as +34600111222"),
        ("", "no recipient"),
        ("   ", "no recipient"),
    ],
)
def test_invalid_phones(phone: str, reason: str) -> None:
    result = check(f"phone,name\n{phone},Ana\n+34600111222,Bo\n")
    assert problems(result) == [(2, "phone", reason)]
    assert [r.line for r in result.rows] == [3]


def test_00_is_taken_for_plus() -> None:
    assert check("phone,name\n0034600111222,Ana\n").rows[0].recipient == "+34600111222"


def test_duplicate_recipients_are_kept_once_after_normalising() -> None:
    data = (
        "phone,name\n"
        "+34 600 11 12 22,Ana\n"
        "+34600111233,Bo\n"
        "+34600111222,Ana again\n"
        "0034 600-111-222,Ana thrice\n"
        "+34600111233,Bo again\n"
    )
    result = check(data)
    assert result.ok
    assert [(r.line, r.recipient, r.values["name"]) for r in result.rows] == [
        (2, "+34600111222", "Ana"),
        (3, "+34600111233", "Bo"),
    ]
    assert result.duplicates == [(4, 2), (5, 2), (6, 3)]


def test_a_row_with_problems_is_not_the_first_of_its_recipient() -> None:
    result = check("phone,name\n+34600111222,\n+34600111222,Ana\n")
    assert [r.line for r in result.rows] == [3]
    assert result.duplicates == []


def test_external_ids_are_not_phone_checked() -> None:
    spec = campaign(recipient_column="customer", recipient_kind="external_id")
    result = check("customer,name\nC-1,Ana\n 600111222 ,Bo\nC-1,Ana again\n,Cy\n", spec)
    assert [(r.line, r.recipient) for r in result.rows] == [(2, "C-1"), (3, "600111222")]
    assert result.duplicates == [(4, 2)]
    assert problems(result) == [(5, "customer", "no recipient")]


def test_senders_from_a_column() -> None:
    spec = campaign(sender_column="from")
    data = "phone,from,name\n+34600111222,wa-spain,Ana\n+34600111233,wa-gone,Bo\n+34600111244,,Cy\n"
    result = check(data, spec)
    assert [(r.line, r.sender) for r in result.rows] == [(2, "wa-spain")]
    assert problems(result) == [
        (3, "from", "unknown sender 'wa-gone'; the senders are wa-main, wa-spain"),
        (4, "from", "no sender"),
    ]


def test_without_a_sender_column_the_sender_is_none() -> None:
    result = check("phone,name\n+34600111222,Ana\n")
    assert result.rows[0].sender is None


def test_an_empty_template_parameter() -> None:
    spec = campaign("{{ row.name }}, pay {{ row.amount }} (ref {{ row.ref }})")
    data = "phone,name,amount,ref,unused\n+34600111222,Ana,  ,,\n+34600111233,Bo,10,R2,\n"
    result = check(data, spec)
    assert problems(result) == [(2, "amount", EMPTY_PARAMETER), (2, "ref", EMPTY_PARAMETER)]
    assert [r.line for r in result.rows] == [3]  # an unused column may be empty


def test_a_column_with_a_space_read_with_brackets() -> None:
    spec = campaign('{{ row.name }}: due on {{ row["due date"] }}')
    result = check("phone,name,due date\n+34600111222,Ana,2026-12-02\n+34600111233,Bo,\n", spec)
    assert problems(result) == [(3, "due date", EMPTY_PARAMETER)]
    assert result.rows[0].values["due date"] == "2026-12-02"
    missing = check("phone,name,due\n+34600111222,Ana,x\n", spec)
    assert [(p.line, p.column) for p in missing.problems] == [(1, "due date")]


def test_more_than_the_listed_problems_gives_the_total() -> None:
    data = "phone,name\n" + "".join(f"+34 {i},x\n" for i in range(MAX_PROBLEMS + 50))
    result = check(data)
    assert len(result.problems) == MAX_PROBLEMS
    assert result.total_problems == MAX_PROBLEMS + 50
    assert result.problems[-1].line == MAX_PROBLEMS + 1
    assert not result.ok


def test_a_template_using_row_unclearly_is_a_problem_at_the_header() -> None:
    result = check("phone,name\n+34600111222,Ana\n", campaign("{{ row[field] }}"))
    assert [(p.line, p.column) for p in result.problems] == [(1, None)]
    assert "row[...] with a computed name" in result.problems[0].reason


def test_only_the_listed_separators() -> None:
    spec = campaign().model_copy(update={"separator": "\t"})
    with pytest.raises(ValueError, match="separator"):
        check("phone\tname\n", spec)


# --- the columns a message reads ---


def test_columns_used_by_every_kind_of_template() -> None:
    outside = {"name": "reminder", "language": "es", "body": ["{{ row.first }}"]}
    card = parse_message(
        {
            "kind": "card",
            "card": {
                "title": "{{ row.title | upper }}",
                "text": "{% if row.vip %}{{ row['due date'] }}{% endif %}{{ contact.name }}",
                "buttons": [{"label": "{{ row.label.strip() }}", "action": "pay"}],
            },
            "outside_window": outside,
        }
    )
    assert columns_used(card) == {"first", "title", "vip", "due date", "label"}
    template = parse_message(
        {
            "kind": "whatsapp_template",
            "template": {
                "name": "renewal",
                "language": "es",
                "header": ["{{ row.h }}"],
                "body": ["{{ row.a }}", "{{ row.b ~ row.a }}"],
                "buttons": ["{{ row.c }}"],
                "text": "{{ row.d }}",
            },
        }
    )
    assert columns_used(template) == {"a", "b", "c", "d", "h"}
    image = parse_message({"kind": "image", "image": {"url": "{{ row.u }}", "caption": "x"}})
    assert columns_used(image) == {"u"}
    assert columns_used(parse_message({"kind": "text", "text": "Hi {{ contact.name }}"})) == set()


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("{{ row[field] }}", "row[...] with a computed name"),
        ("{{ row[0] }}", "row[...] with a computed name"),
        ("{{ row['a' ~ 'b'] }}", "row[...] with a computed name"),
        ("{{ row | length }}", "row on its own"),
        ("{{ row }}", "row on its own"),
        ("{% for k in row %}{{ k }}{% endfor %}", "row on its own"),
        ("{{ row.get('name') }}", "it calls a method of row"),
        ("{% set row = contact %}{{ row.name }}", "it gives row a new value"),
    ],
)
def test_other_uses_of_row_are_refused(text: str, what: str) -> None:
    with pytest.raises(RowUseProblem, match=r"^message\.text: ") as caught:
        columns_used(parse_message({"kind": "text", "text": f"Hi\n{text}"}))
    assert what in str(caught.value)
    assert "(template line 2)" in str(caught.value)
    assert caught.value.path == ("message", "text")
