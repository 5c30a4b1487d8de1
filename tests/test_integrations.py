"""Integration calls against a real HTTP server on 127.0.0.1, and Set Attributes."""

from __future__ import annotations

import copy
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from nudge.integrations.attributes import AttributeChanges, apply_set_attributes
from nudge.integrations.calls import IntegrationError, call_integration, redact
from nudge.models.integrations import Integration, SetAttribute
from nudge.templating import TemplateProblem
from tests.utils.egress import loopback_http
from tests.utils.receivers import Reply, WebhookReceiver, free_port

TOKEN = "s3cr3t-itsm-token"
SECRETS = {"ITSM_TOKEN": TOKEN, "SHORT": "abc"}
TICKETS = {
    "result": [
        {"number": "INC001", "short_description": "Laptop", "approver": {"email": "a@x.com"}},
        {"number": "INC002", "short_description": "Phone", "approver": {"email": "b@x.com"}},
        {"number": "INC003", "short_description": "Desk", "approver": {"email": "c@x.com"}},
    ]
}
RECORD = {"followup": {"data": {"number": "INC001", "owner": "ada lovelace"}}}


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with loopback_http() as client:
        yield client


def integration(
    receiver: WebhookReceiver, path: str = "/api/tickets", **fields: Any
) -> Integration:
    return Integration.model_validate(
        {"name": "tickets", "url": receiver.base_url + path, **fields}
    )


async def failure(
    http: httpx.AsyncClient, definition: Integration, context: dict[str, Any] | None = None
) -> IntegrationError:
    with pytest.raises(IntegrationError) as caught:
        await call_integration(http, definition, context or RECORD, secrets=SECRETS)
    return caught.value


# --- requests as the server sees them ---------------------------------------------------------


async def test_a_get_reaches_the_server_with_url_query_and_headers_rendered(
    http: httpx.AsyncClient, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.serve_json("/api/tickets/INC001", TICKETS)
    definition = integration(
        webhook_receiver,
        "/api/tickets/{{ followup.data.number }}?state=pending_approval&state=new",
        query={"assignee": "{{ followup.data.owner }}", "q": "a&b=c"},
        headers={
            "Authorization": "Bearer {{ secrets.ITSM_TOKEN }}",
            "X-Record": "{{ followup.data.number }}",
        },
    )

    result = await call_integration(http, definition, RECORD, secrets=SECRETS)

    assert result == TICKETS
    [request] = webhook_receiver.requests
    assert request.method == "GET"
    assert request.path_only == "/api/tickets/INC001"
    assert request.query == {
        "state": ["pending_approval", "new"],  # the URL's own query survives
        "assignee": ["ada lovelace"],
        "q": ["a&b=c"],  # query values are encoded, not spliced into the URL
    }
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["x-record"] == "INC001"
    assert request.headers["accept"] == "application/json"
    assert request.body == b""


async def test_a_query_value_overrides_the_same_name_in_the_url(
    http: httpx.AsyncClient, webhook_receiver: WebhookReceiver
) -> None:
    definition = integration(webhook_receiver, "/api/tickets?state=new", query={"state": "closed"})
    await call_integration(http, definition, {}, secrets={})
    assert webhook_receiver.requests[0].query == {"state": ["closed"]}


async def test_a_post_body_renders_to_json_and_arrives_as_json(
    http: httpx.AsyncClient, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.serve_json("/api/tickets/INC001/escalate", {"ok": True}, status=201)
    definition = integration(
        webhook_receiver,
        "/api/tickets/{{ followup.data.number }}/escalate",
        name="escalate",
        method="POST",
        body=(
            '{"number": {{ followup.data.number | tojson }}, "note": {{ note | tojson }},'
            ' "attempts": {{ attempts }}, "urgent": true}'
        ),
    )
    context = {**RECORD, "note": 'said "no"\nthen left', "attempts": 3}

    result = await call_integration(http, definition, context, secrets=SECRETS)

    assert result == {"ok": True}
    [request] = webhook_receiver.requests
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/json"
    assert request.json == {
        "number": "INC001",
        "note": 'said "no"\nthen left',
        "attempts": 3,
        "urgent": True,
    }


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
async def test_other_methods_are_sent_as_defined(
    http: httpx.AsyncClient, webhook_receiver: WebhookReceiver, method: str
) -> None:
    webhook_receiver.serve_json("/api/tickets/1", {"method": method})
    definition = integration(webhook_receiver, "/api/tickets/1", method=method, body='{"a": 1}')
    assert await call_integration(http, definition, {}, secrets={}) == {"method": method}
    assert webhook_receiver.requests[0].method == method
    assert webhook_receiver.requests[0].json == {"a": 1}


async def test_a_content_type_header_in_the_definition_is_kept(
    http: httpx.AsyncClient, webhook_receiver: WebhookReceiver
) -> None:
    definition = integration(
        webhook_receiver,
        method="POST",
        body="{}",
        headers={"content-type": "application/vnd.api+json"},
    )
    await call_integration(http, definition, {}, secrets={})
    assert webhook_receiver.requests[0].headers["content-type"] == "application/vnd.api+json"


# --- responses ----------------------------------------------------------------------------------


async def test_a_json_response_is_parsed_even_when_labelled_text(
    http: httpx.AsyncClient, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.serve(
        "/api/tickets", Reply(body='{"result": []}', headers={"Content-Type": "text/plain"})
    )
    assert await call_integration(http, integration(webhook_receiver), {}, secrets={}) == {
        "result": []
    }


async def test_a_text_response_is_returned_as_text_and_an_empty_one_as_none(
    http: httpx.AsyncClient, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.serve("/api/text", Reply(body="accepted, thanks"))
    webhook_receiver.serve("/api/empty", Reply(status=204, body=""))
    text = await call_integration(http, integration(webhook_receiver, "/api/text"), {}, secrets={})
    empty = await call_integration(
        http, integration(webhook_receiver, "/api/empty"), {}, secrets={}
    )
    assert text == "accepted, thanks"
    assert empty is None


async def test_a_response_that_says_json_but_is_not_is_a_final_error(
    http: httpx.AsyncClient, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.serve(
        "/api/tickets",
        Reply(body="<html>login</html>", headers={"Content-Type": "application/json"}),
    )
    error = await failure(http, integration(webhook_receiver))
    assert str(error).startswith("integration 'tickets': response is not JSON")
    assert error.retryable is False
    assert error.status == 200


# --- statuses and transport failures ----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(400, False), (401, False), (404, False), (422, False), (408, True), (429, True),
     (500, True), (502, True), (503, True)],
)  # fmt: skip
async def test_statuses_tell_retry_from_give_up(
    http: httpx.AsyncClient, webhook_receiver: WebhookReceiver, status: int, retryable: bool
) -> None:
    webhook_receiver.serve_json("/api/tickets", {"error": "nope"}, status=status)
    error = await failure(http, integration(webhook_receiver))
    assert error.retryable is retryable
    assert error.status == status
    assert error.integration == "tickets"
    assert str(error).startswith(f"integration 'tickets': HTTP {status} from 127.0.0.1:")
    assert "/api/tickets" in str(error)
    assert "nope" in str(error)  # an excerpt of the answer helps the operator


async def test_a_secret_reaches_the_server_but_never_an_error_message(
    http: httpx.AsyncClient, webhook_receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="nudge")
    # The server echoes the token, as some error pages do; the path and query carry it too.
    webhook_receiver.respond_with(Reply(status=500, body=f"invalid token {TOKEN} for user"))
    definition = integration(
        webhook_receiver,
        "/api/{{ secrets.ITSM_TOKEN }}/tickets",
        query={"api_key": "{{ secrets.ITSM_TOKEN }}", "state": "pending_approval"},
        headers={"Authorization": "Bearer {{ secrets.ITSM_TOKEN }}"},
    )

    error = await failure(http, definition)

    [request] = webhook_receiver.requests
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.query["api_key"] == [TOKEN]
    assert error.retryable is True
    assert error.status == 500
    assert TOKEN not in str(error)
    assert TOKEN not in repr(error)
    assert "pending_approval" not in str(error)  # no query string in errors
    assert str(error) == (
        f"integration 'tickets': HTTP 500 from 127.0.0.1:{request_port(webhook_receiver)}"
        "/api/***/tickets: invalid token *** for user"
    )
    # Temporal sends an error's cause along with it: no httpx error with the URL rides along.
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__
    assert all(TOKEN not in record.getMessage() for record in caplog.records)


def request_port(receiver: WebhookReceiver) -> int:
    return httpx.URL(receiver.base_url).port or 80


async def test_a_long_answer_is_cut_after_redaction_so_no_part_of_a_secret_shows(
    http: httpx.AsyncClient, webhook_receiver: WebhookReceiver
) -> None:
    for lead in range(185, 205):  # the secret straddles the cut somewhere in this range
        webhook_receiver.respond_with(Reply(status=400, body="x" * lead + TOKEN + "y" * 300))
        error = await failure(http, integration(webhook_receiver))
        assert TOKEN[:6] not in str(error)


async def test_connection_refused_is_retryable(http: httpx.AsyncClient) -> None:
    definition = Integration(name="tickets", url=f"http://127.0.0.1:{free_port()}/api/tickets")
    error = await failure(http, definition)
    assert error.retryable is True
    assert error.status is None
    assert str(error).startswith("integration 'tickets': cannot reach 127.0.0.1:")


async def test_a_server_slower_than_the_timeout_is_retryable(
    http: httpx.AsyncClient, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.respond_with(Reply(delay_seconds=2))
    error = await failure(http, integration(webhook_receiver, timeout_seconds=0.3))
    assert error.retryable is True
    assert error.status is None
    assert str(error).startswith("integration 'tickets': timed out after 0.3 s")


async def test_expected_status_replaces_any_2xx(
    http: httpx.AsyncClient, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.serve_json("/created", {"id": 7}, status=201)
    webhook_receiver.serve_json("/ok", {"id": 8}, status=200)
    webhook_receiver.serve_json("/gone", {"error": "not found"}, status=404)

    created = integration(webhook_receiver, "/created", expected_status=[201])
    assert await call_integration(http, created, {}, secrets={}) == {"id": 7}

    error = await failure(http, integration(webhook_receiver, "/ok", expected_status=[201]))
    assert error.retryable is False
    assert error.status == 200
    assert "HTTP 200" in str(error) and "expected 201" in str(error)

    gone_is_fine = integration(webhook_receiver, "/gone", expected_status=[200, 404])
    assert await call_integration(http, gone_is_fine, {}, secrets={}) == {"error": "not found"}


async def test_redirects_are_not_followed(
    http: httpx.AsyncClient, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.serve("/api/tickets", Reply(status=302, headers={"Location": "/elsewhere"}))
    error = await failure(http, integration(webhook_receiver))
    assert error.retryable is False
    assert error.status == 302
    assert "redirects are not followed" in str(error)
    assert [r.path for r in webhook_receiver.requests] == ["/api/tickets"]


# --- definitions that cannot be sent ------------------------------------------------------------


async def test_a_body_that_is_not_json_after_rendering_is_a_final_error(
    http: httpx.AsyncClient, webhook_receiver: WebhookReceiver
) -> None:
    definition = integration(
        webhook_receiver,
        name="escalate",
        method="POST",
        body='{"number": {{ followup.data.number }}, "token": "{{ secrets.ITSM_TOKEN }}"}',
    )
    error = await failure(http, definition)
    assert error.retryable is False
    assert error.integration == "escalate"
    assert str(error).startswith("integration 'escalate': body does not render to valid JSON")
    assert TOKEN not in str(error)
    assert webhook_receiver.requests == []  # nothing was sent


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"url": "{{ base }}/{{ 1 / 0 }}"}, "url: template cannot be rendered: ZeroDivisionError"),
        ({"url": "{{ followup.data.number }}"}, "url does not render to an http(s) URL"),
        ({"url": "ftp://127.0.0.1/x"}, "url does not render to an http(s) URL"),
        ({"headers": {"X-A": "{{ followup.nothing.here }}"}}, "header 'X-A': template cannot"),
        ({"headers": {"X-A": "a{{ '\\n' }}b"}}, "header 'X-A' renders to more than one line"),
        ({"query": {"q": "{{ 'a' + 1 }}"}}, "query 'q': template cannot be rendered: TypeError"),
        ({"body": "{{ followup.nothing.here }}"}, "body: template cannot be rendered"),
    ],
)
async def test_definitions_that_cannot_render_are_final_errors(
    http: httpx.AsyncClient,
    webhook_receiver: WebhookReceiver,
    fields: dict[str, Any],
    problem: str,
) -> None:
    definition = Integration.model_validate(
        {"name": "tickets", "url": "{{ base }}/api", "method": "POST", **fields}
    )
    error = await failure(http, definition, {**RECORD, "base": webhook_receiver.base_url})
    assert error.retryable is False
    assert error.status is None
    assert str(error).startswith(f"integration 'tickets': {problem}"), str(error)
    assert webhook_receiver.requests == []
    # A template's own fault is the same typed, permanent failure as in a message.
    failure_type = error.activity_failure().type
    assert failure_type == (
        "TemplateError" if "template cannot" in problem else "IntegrationFailed"
    )
    assert error.activity_failure().non_retryable


def test_redact_hides_values_and_their_encoded_forms() -> None:
    # A short value ("abc") only where it stands alone: inside a word it is ordinary text.
    secrets = {"A": "p@ss word/1", "B": "abc", "C": "p@ss"}
    text = "x p@ss word/1 y p%40ss%20word%2F1 z p%40ss+word%2F1 abc p@ss xabcx"
    assert redact(text, secrets) == "x *** y *** z *** *** *** xabcx"


# --- set attributes ---------------------------------------------------------------------------


def set_attributes(*items: tuple[str, str, str]) -> list[SetAttribute]:
    return [SetAttribute(scope=scope, name=name, value=value) for scope, name, value in items]


def test_set_attribute_values_are_json_typed_when_they_render_to_json() -> None:
    items = set_attributes(
        ("global", "pending_count", "{{ tickets.result | length }}"),
        ("local", "numbers", "{{ tickets.result | map(attribute='number') | list | tojson }}"),
        ("local", "first", "{{ tickets.result[0] | tojson }}"),
        ("local", "ratio", "1.5"),
        ("local", "flag", "{{ tickets.result | length > 2 }}"),  # Python's True is not JSON
        ("local", "yes", "true"),
        ("local", "nothing", "null"),
        ("local", "quoted", '"7"'),
        ("local", "padded", "007"),
        ("local", "not_a_number", "NaN"),
        ("local", "huge", "1e400"),
        ("local", "empty", "{{ '' }}"),
        ("local", "text", "{{ tickets.result | length }} pending"),
        ("local", "python", "{{ tickets.result[0].approver }}"),  # a repr, not JSON
    )
    changes = apply_set_attributes(items, {"tickets": TICKETS})
    assert changes.global_ == {"pending_count": 3}
    assert changes.local == {
        "numbers": ["INC001", "INC002", "INC003"],
        "first": TICKETS["result"][0],
        "ratio": 1.5,
        "flag": "True",
        "yes": True,
        "nothing": None,
        "quoted": "7",
        "padded": "007",
        "not_a_number": "NaN",
        "huge": "1e400",
        "empty": "",
        "text": "3 pending",
        "python": "{'email': 'a@x.com'}",
    }
    assert changes.contact == {}
    assert type(changes.global_["pending_count"]) is int


def test_later_set_attributes_see_earlier_ones_without_touching_the_callers_context() -> None:
    context = {
        "tickets": TICKETS,
        "local": {"count": 100, "kept": "yes"},
        "global": {"base": 1},
        "contact": {"external_id": "u1", "attributes": {"lang": "es", "tier": "gold"}},
    }
    before = copy.deepcopy(context)
    items = set_attributes(
        ("local", "count", "{{ tickets.result | length }}"),
        ("local", "double", "{{ local.count * 2 }}"),
        ("global", "total", "{{ local.double + global.base }}"),
        ("global", "base", "10"),
        ("local", "again", "{{ global.base }}-{{ global.total }}-{{ local.kept }}"),
        ("contact", "lang", "en"),
        ("local", "greeting", "{{ contact.attributes.lang }}/{{ contact.attributes.tier }}"),
        ("local", "count", "{{ local.count + 1 }}"),  # the last assignment wins
    )

    changes = apply_set_attributes(items, context)

    assert changes == AttributeChanges(
        local={"count": 4, "double": 6, "again": "10-7-yes", "greeting": "en/gold"},
        global_={"total": 7, "base": 10},
        contact={"lang": "en"},
    )
    assert context == before


def test_set_attributes_cannot_read_secrets() -> None:
    # An attribute is stored and shown: a secret copied into one would leak.
    items = set_attributes(("local", "leak", "x{{ secrets.ITSM_TOKEN }}"))
    with pytest.raises(
        TemplateProblem, match=r"set attribute local\.leak: .*'secrets' is undefined"
    ):
        apply_set_attributes(items, {"secrets": SECRETS})


def test_a_set_attribute_that_cannot_render_names_the_attribute() -> None:
    items = set_attributes(("global", "broken", "{{ tickets.result | length / 0 }}"))
    with pytest.raises(TemplateProblem, match=r"^set attribute global\.broken: .*ZeroDivision"):
        apply_set_attributes(items, {"tickets": TICKETS})
