"""Secrets reach only where they are meant to.

- A secret is read only by an integration's headers, query and body: in a url, a
  set-attribute value or a journey's other texts it is a 422 naming the field and the secret.
- A secret with `allowed_hosts` goes to no other host: refused when a definition is saved
  (also through a url whose host is a template), and when a call renders to another host
  (so narrowing the hosts stops definitions saved before).
- An import never activates a follow-up that sends a secret to a host this tenant has not
  allowed for it, and its report says which hosts would receive which secrets.
- Error texts carry no secret value, in the forms a value takes on its way (URL-encoded,
  base64, basic auth, another letter case), short ones included; database errors carry no
  bound parameters.

The receivers listen on 127.0.0.1 (the suite's egress policy allows loopback): that is the
host a restricted secret is allowed to, or not, here.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from nudge.integrations.calls import IntegrationError, call_integration, redact
from nudge.models.db import transaction
from nudge.models.followup_bundle import write_bundle
from nudge.models.followups import FollowUpDefinition
from nudge.models.integrations import Integration
from nudge.models.secret_hosts import SecretValues
from nudge.models.tables import Secret
from tests.conftest import TenantKeys, problems
from tests.utils.egress import loopback_http
from tests.utils.followups import followup_definition
from tests.utils.receivers import Reply, WebhookReceiver
from tests.utils.waiting import eventually

pytestmark = pytest.mark.usefixtures("worker")

TOKEN = "itsm-s3cret-token-4711"
HEADER = "body.data_extraction.integrations.0.headers.Authorization"


@pytest.fixture
def time_env(own_time_env: WorkflowEnvironment) -> WorkflowEnvironment:
    """Pollers run forever: a leftover one would stop the shared server from skipping time."""
    return own_time_env


@pytest.fixture
def itsm() -> Iterator[WebhookReceiver]:
    """An ITSM with nothing pending: polls reach it, and nobody is reminded."""
    with WebhookReceiver() as server:
        server.serve_json("/api/tickets", {"result": []})
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with loopback_http() as client:
        yield client


async def put_secret(
    api: httpx.AsyncClient, tenant: TenantKeys, name: str = "ITSM_TOKEN", **body: Any
) -> httpx.Response:
    return await api.put(
        f"/v1/secrets/{name}", json={"value": TOKEN, **body}, headers=tenant.headers()
    )


async def setup_tenant(
    api: httpx.AsyncClient, tenant: TenantKeys, allowed_hosts: list[str] | None = None
) -> None:
    """The channel `ops` (a log) and the secret ITSM_TOKEN, restricted when hosts are given."""
    answer = await api.put("/v1/channels/ops", json={"type": "log"}, headers=tenant.headers())
    assert answer.status_code == 200, answer.text
    hosts: dict[str, Any] = {} if allowed_hosts is None else {"allowed_hosts": allowed_hosts}
    answer = await put_secret(api, tenant, **hosts)
    assert answer.status_code == 204, answer.text


def definition(base_url: str, **overrides: Any) -> dict[str, Any]:
    return followup_definition(base_url, **{"channel": "ops", "status": "inactive", **overrides})


async def save(api: httpx.AsyncClient, tenant: TenantKeys, body: dict[str, Any]) -> httpx.Response:
    return await api.post("/v1/followups", json=body, headers=tenant.headers())


def http_step(url: str, **integration: Any) -> dict[str, Any]:
    return {
        "id": "call",
        "type": "http_request",
        "integration": {"name": "crm", "url": url, **integration},
        "variable": "crm",
    }


async def save_journey(
    api: httpx.AsyncClient, tenant: TenantKeys, *steps: dict[str, Any]
) -> httpx.Response:
    body = {"name": "Secrets", "trigger": {"type": "api"}, "steps": list(steps)}
    return await api.post("/v1/journeys", json=body, headers=tenant.headers())


def carries_token(request: Any) -> bool:
    return (
        TOKEN in request.path
        or TOKEN.encode() in request.body
        or any(TOKEN in value for value in request.headers.values())
    )


# --- where a secret may be read ---------------------------------------------------------------


async def test_a_secret_in_an_integration_url_is_refused_naming_the_field_and_the_secret(
    api: httpx.AsyncClient, tenant: TenantKeys, itsm: WebhookReceiver
) -> None:
    await setup_tenant(api, tenant)
    in_path = definition(itsm.base_url)
    in_path["data_extraction"]["integrations"][0]["url"] = (
        itsm.base_url + "/api/{{ secrets.ITSM_TOKEN }}/tickets"
    )
    refused = problems(await save(api, tenant, in_path))
    url_problem = refused["body.data_extraction.integrations.0.url"]
    assert "'ITSM_TOKEN'" in url_problem and "url" in url_problem

    in_host = definition(itsm.base_url)
    in_host["post_actions"]["after_all_attempts"][0]["integration"]["url"] = (
        "https://{{ secrets.ITSM_TOKEN }}.example.com/escalate"
    )
    refused = problems(await save(api, tenant, in_host))
    assert "'ITSM_TOKEN'" in refused["body.post_actions.after_all_attempts.0.integration.url"]

    journey = await save_journey(
        api, tenant, http_step("https://crm.example.com/{{ secrets.ITSM_TOKEN }}")
    )
    assert "'ITSM_TOKEN'" in problems(journey)["body.steps.0.integration.url"]
    assert (await api.get("/v1/followups", headers=tenant.headers())).json()["items"] == []


async def test_a_secret_in_a_set_attribute_or_a_journey_text_is_refused_naming_it(
    api: httpx.AsyncClient, tenant: TenantKeys, itsm: WebhookReceiver
) -> None:
    await setup_tenant(api, tenant)
    attribute = definition(itsm.base_url)
    attribute["data_extraction"]["set_attributes"][0]["value"] = "{{ secrets.ITSM_TOKEN }}"
    attribute["button_actions"]["approve"].append(
        {
            "type": "set_attribute",
            "set_attribute": {
                "scope": "local",
                "name": "k",
                "value": "{{ secrets['ITSM_TOKEN'] }}",
            },
        }
    )
    refused = problems(await save(api, tenant, attribute))
    for field in (
        "body.data_extraction.set_attributes.0.value",
        "body.button_actions.approve.1.set_attribute.value",
    ):
        assert "secret 'ITSM_TOKEN' cannot be used here" in refused[field], refused

    journey = await save_journey(
        api,
        tenant,
        {"id": "keep", "type": "update_contact", "attributes": {"k": "{{ secrets.ITSM_TOKEN }}"}},
        {
            "id": "route",
            "type": "branch",
            "branches": [{"condition": "secrets.ITSM_TOKEN == 'x'", "next": "done"}],
            "else": "done",
        },
        {"id": "done", "type": "end"},
    )
    refused = problems(journey)
    assert "secret 'ITSM_TOKEN' cannot be used here" in refused["body.steps.0.attributes.k"]
    assert "secret 'ITSM_TOKEN'" in refused["body.steps.1.branches.0.condition"]


async def test_a_template_that_reads_secrets_without_naming_one_is_refused(
    api: httpx.AsyncClient, tenant: TenantKeys, itsm: WebhookReceiver
) -> None:
    await setup_tenant(api, tenant)
    body = definition(itsm.base_url)
    body["data_extraction"]["integrations"][0]["headers"] = {
        "Authorization": "Bearer {{ secrets[followup.name] }}"
    }
    refused = problems(await save(api, tenant, body))
    assert "without naming the secret" in refused[HEADER]


# --- allowed hosts, when saving ---------------------------------------------------------------


async def test_allowed_hosts_are_validated_and_a_new_value_keeps_them(
    api: httpx.AsyncClient, tenant: TenantKeys, itsm: WebhookReceiver
) -> None:
    refused_hosts = [
        ["https://itsm.example.com"],
        ["itsm.example.com:443"],
        ["itsm.example.com/api"],
        ["*.example.com"],
        [],
        ["h"] * 21,
    ]
    for bad in refused_hosts:
        answer = await put_secret(api, tenant, allowed_hosts=bad)
        assert answer.status_code == 422, (bad, answer.text)
    assert (await put_secret(api, tenant, allowed_hosts=["ITSM.Example.COM."])).status_code == 204
    await api.put("/v1/channels/ops", json={"type": "log"}, headers=tenant.headers())
    # Lower-cased when stored: the example ITSM of the definition is allowed.
    assert (await save(api, tenant, definition("https://itsm.example.com"))).status_code == 201

    # A new value alone changes nothing of where the secret may go...
    assert (await put_secret(api, tenant)).status_code == 204
    assert "'127.0.0.1'" in problems(await save(api, tenant, definition(itsm.base_url)))[HEADER]
    listed = (await api.get("/v1/secrets", headers=tenant.headers())).json()["items"]
    assert [s["allowed_hosts"] for s in listed] == [["itsm.example.com"]]
    # ...null lifts the restriction.
    assert (await put_secret(api, tenant, allowed_hosts=None)).status_code == 204
    assert (await save(api, tenant, definition(itsm.base_url))).status_code == 201
    listed = (await api.get("/v1/secrets", headers=tenant.headers())).json()
    assert TOKEN not in json.dumps(listed)  # the value stays write-only


async def test_a_restricted_secret_towards_a_host_it_does_not_allow_is_refused(
    api: httpx.AsyncClient, tenant: TenantKeys, itsm: WebhookReceiver
) -> None:
    await setup_tenant(api, tenant, allowed_hosts=["itsm.example.com"])
    body = definition(itsm.base_url)
    body["button_actions"]["approve"][0]["integration"]["body"] = (
        '{"token": "{{ secrets.ITSM_TOKEN }}"}'
    )
    refused = problems(await save(api, tenant, body))
    for field in (HEADER, "body.button_actions.approve.0.integration.body"):
        assert refused[field] == (
            "secret 'ITSM_TOKEN' may go only to itsm.example.com, not to host '127.0.0.1'"
        )
    journey = await save_journey(
        api,
        tenant,
        http_step(itsm.base_url + "/crm", query={"key": "{{ secrets.ITSM_TOKEN }}"}),
    )
    assert "not to host '127.0.0.1'" in problems(journey)["body.steps.0.integration.query.key"]

    # The host it allows: saved.
    assert (await save(api, tenant, definition("https://itsm.example.com"))).status_code == 201
    await put_secret(api, tenant, allowed_hosts=["itsm.example.com", "127.0.0.1"])
    assert (await save(api, tenant, body)).status_code == 201


async def test_a_restricted_secret_through_a_templated_host_is_refused(
    api: httpx.AsyncClient, tenant: TenantKeys, itsm: WebhookReceiver
) -> None:
    await setup_tenant(api, tenant)
    templated = definition("{{ global.itsm_base }}")
    # Unrestricted, it may go anywhere, through any url.
    assert (await save(api, tenant, templated)).status_code == 201

    await put_secret(api, tenant, allowed_hosts=["127.0.0.1"])
    refused = problems(await save(api, tenant, {**templated, "name": "Templated host"}))
    assert "secret 'ITSM_TOKEN' may go only to 127.0.0.1" in refused[HEADER]
    assert "is a template, which cannot be checked" in refused[HEADER]
    # The host as a template after a literal start is a template too.
    tricky = definition(itsm.base_url + "{{ followup.name }}")
    assert "cannot be checked" in problems(await save(api, tenant, tricky))[HEADER]
    journey = await save_journey(
        api,
        tenant,
        http_step(
            "https://{{ contact.attributes.crm }}/api",
            headers={"X-Key": "{{ secrets.ITSM_TOKEN }}"},
        ),
    )
    assert "cannot be checked" in problems(journey)["body.steps.0.integration.headers.X-Key"]


# --- allowed hosts, at run time ---------------------------------------------------------------


async def test_narrowing_a_secrets_hosts_stops_a_running_follow_up_from_sending_it(
    api: httpx.AsyncClient, tenant: TenantKeys, itsm: WebhookReceiver
) -> None:
    await setup_tenant(api, tenant, allowed_hosts=["127.0.0.1"])
    created = await save(api, tenant, definition(itsm.base_url, status="active"))
    assert created.status_code == 201, created.text
    followup = f"/v1/followups/{created.json()['id']}"
    await eventually(lambda: any(carries_token(r) for r in itsm.requests), message="first poll")

    narrowed = await put_secret(api, tenant, allowed_hosts=["itsm.example.com"])
    assert narrowed.status_code == 204
    before = len(itsm.requests)
    assert (await api.post(f"{followup}/poll", headers=tenant.headers())).status_code == 202

    async def refused_poll() -> dict[str, Any]:
        found: dict[str, Any] = (await api.get(followup, headers=tenant.headers())).json()[
            "last_poll"
        ] or {}
        return found if "error" in found else {}  # empty: not yet

    report: dict[str, Any] = await eventually(refused_poll, message="the refused poll is reported")
    assert report["error"] == (
        "integration 'tickets': secret 'ITSM_TOKEN' may go only to itsm.example.com, "
        "not to host '127.0.0.1'; nothing was sent"
    )
    assert report["attempt"] == 1  # permanent: not retried
    assert [r for r in itsm.requests[before:] if carries_token(r)] == []


async def test_a_call_to_a_host_not_allowed_sends_nothing_and_hides_the_secret_from_others(
    http: httpx.AsyncClient, webhook_receiver: WebhookReceiver
) -> None:
    secrets = SecretValues({"R": TOKEN, "OPEN": "open-value"}, {"R": ["itsm.example.com"]})
    named = Integration(
        name="tickets",
        url=webhook_receiver.base_url + "/api",
        headers={"Authorization": "Bearer {{ secrets.R }}"},
    )
    with pytest.raises(IntegrationError) as caught:
        await call_integration(http, named, {}, secrets=secrets)
    assert caught.value.retryable is False
    assert "secret 'R'" in str(caught.value) and "'127.0.0.1'" in str(caught.value)
    assert webhook_receiver.requests == []

    # A template that does not name it (saved before the rule) does not see it at all.
    unnamed = Integration(
        name="tickets",
        url=webhook_receiver.base_url + "/api",
        headers={"X-All": "{{ secrets | dictsort }}", "X-Key": "{{ secrets[key] }}"},
    )
    await call_integration(http, unnamed, {"key": "R"}, secrets=secrets)
    [request] = webhook_receiver.requests
    assert not carries_token(request)
    assert "open-value" in request.headers["x-all"]

    # Towards a host it allows, it goes.
    await call_integration(http, named, {}, secrets=secrets, allowed_hosts={"R": ["127.0.0.1"]})
    assert webhook_receiver.requests[-1].headers["authorization"] == f"Bearer {TOKEN}"


# --- import ----------------------------------------------------------------------------------


def bundle(*definitions: dict[str, Any]) -> bytes:
    return write_bundle("acme", [FollowUpDefinition.model_validate(d) for d in definitions])


async def import_(api: httpx.AsyncClient, tenant: TenantKeys, data: bytes) -> httpx.Response:
    return await api.post(
        "/v1/followups/import",
        content=data,
        headers={**tenant.headers(), "Content-Type": "application/zip"},
    )


async def test_an_import_activates_nothing_that_sends_a_secret_to_a_host_not_allowed_here(
    api: httpx.AsyncClient, tenant: TenantKeys, itsm: WebhookReceiver
) -> None:
    await setup_tenant(api, tenant)  # ITSM_TOKEN exists, allowed to no host in particular
    direct = definition(itsm.base_url, status="active", name="Direct")
    templated = definition("{{ global.itsm_base }}", status="active", name="Templated")
    data = bundle(direct, templated)

    answer = await import_(api, tenant, data)
    assert answer.status_code == 201, answer.text
    report = answer.json()
    assert report["missing"] == {"channels": [], "secrets": []}
    assert report["secret_hosts"] == {
        "ITSM_TOKEN": [
            "127.0.0.1",
            "{{ global.itsm_base }}/api/tickets?state=pending_approval (a templated host)",
        ]
    }
    assert [(f["name"], f["status"]) for f in report["created"]] == [
        ("Direct", "inactive"),
        ("Templated", "inactive"),
    ]
    reasons = {left["name"]: left["reasons"] for left in report["left_inactive"]}
    assert reasons == {
        "Direct": [
            "sends secret 'ITSM_TOKEN' to 127.0.0.1; this tenant's secret 'ITSM_TOKEN' has no "
            "allowed_hosts (PUT /v1/secrets/ITSM_TOKEN with allowed_hosts ['127.0.0.1'] "
            "allows it)"
        ],
        "Templated": [
            "sends secret 'ITSM_TOKEN' through a url whose host is a template "
            "('{{ global.itsm_base }}/api/tickets?state=pending_approval'), which cannot be "
            "checked"
        ],
    }

    # Another host allowed is not this one.
    await put_secret(api, tenant, allowed_hosts=["itsm.example.com"])
    report = (await import_(api, tenant, bundle(direct))).json()
    assert report["created"][0]["status"] == "inactive"
    assert "does not allow (allowed: itsm.example.com)" in report["left_inactive"][0]["reasons"][0]
    assert itsm.requests == []  # nothing imported ever polled


async def test_an_import_activates_what_sends_secrets_only_to_hosts_allowed_here(
    api: httpx.AsyncClient, tenant: TenantKeys, itsm: WebhookReceiver
) -> None:
    await setup_tenant(api, tenant, allowed_hosts=["127.0.0.1"])
    answer = await import_(api, tenant, bundle(definition(itsm.base_url, status="active")))
    assert answer.status_code == 201, answer.text
    report = answer.json()
    assert report["secret_hosts"] == {"ITSM_TOKEN": ["127.0.0.1"]}
    assert report["left_inactive"] == []
    assert report["created"][0]["status"] == "active"
    await eventually(lambda: any(carries_token(r) for r in itsm.requests), message="it polls")


async def test_an_import_with_a_secret_in_a_url_is_refused_like_a_save(
    api: httpx.AsyncClient, tenant: TenantKeys, itsm: WebhookReceiver
) -> None:
    await setup_tenant(api, tenant, allowed_hosts=["127.0.0.1"])
    leaky = definition(itsm.base_url, name="Leaky")
    leaky["data_extraction"]["integrations"][0]["query"] = {}
    leaky["data_extraction"]["integrations"][0]["url"] = (
        itsm.base_url + "/api?k={{ secrets.ITSM_TOKEN }}"
    )
    refused = problems(await import_(api, tenant, bundle(definition(itsm.base_url), leaky)))
    assert list(refused) == ["body.followups.1.data_extraction.integrations.0.url"]
    assert refused["body.followups.1.data_extraction.integrations.0.url"].startswith(
        "follow-up 'Leaky': secret 'ITSM_TOKEN' in the url"
    )
    assert (await api.get("/v1/followups", headers=tenant.headers())).json()["items"] == []


# --- redaction ---------------------------------------------------------------------------------


def test_redact_hides_transformed_forms_of_a_secret() -> None:
    secrets = {"S": "p@ss/w0rd-Secret+1"}
    value = secrets["S"]
    forms = {
        "as is": value,
        "upper case": value.upper(),
        "lower case": value.lower(),
        "url-encoded": quote(value, safe=""),
        "url-encoded, lower-case hex": quote(value, safe="").replace("%2F", "%2f"),
        "base64": base64.b64encode(value.encode()).decode(),
        "url-safe base64 unpadded": base64.urlsafe_b64encode(value.encode()).decode().rstrip("="),
        "hex": value.encode().hex(),
    }
    for what, form in forms.items():
        assert redact(f"HTTP 401: bad credentials <{form}> for you", secrets) == (
            "HTTP 401: bad credentials <***> for you"
        ), what
    # Inside the base64 of a longer string, every character that carries bits of the value
    # is hidden; what is left is the rest (a user name of basic auth, padding).
    embedded = [f"{user}:{value}" for user in ("u", "ad", "svc", "admin")] + [f"{value}:x"]
    for text in embedded:  # every alignment of the value in the base64
        encoded = base64.b64encode(text.encode()).decode()
        left = redact(f"<{encoded}>", secrets).removeprefix("<").removesuffix(">")
        assert "***" in left, text
        assert len(left.replace("***", "")) <= 8, (text, left)


def test_redact_hides_short_secrets_where_they_stand_alone() -> None:
    secrets = {"PIN": "42", "FLAG": "t"}
    text = 'HTTP 401 from 127.0.0.1:8042/api: bad pin 42, Bearer t, "42", token=T'
    assert redact(text, secrets) == (
        'HTTP 401 from 127.0.0.1:8042/api: bad pin ***, Bearer ***, "***", token=***'
    )


async def test_an_echoed_secret_in_another_form_never_reaches_the_error_text(
    http: httpx.AsyncClient, webhook_receiver: WebhookReceiver
) -> None:
    basic = base64.b64encode(f"svc:{TOKEN}".encode()).decode()
    webhook_receiver.respond_with(
        Reply(status=401, body=f"denied: Basic {basic} / {TOKEN.upper()} / {quote(TOKEN)}")
    )
    definition = Integration(
        name="tickets",
        url=webhook_receiver.base_url + "/api",
        headers={"Authorization": "Bearer {{ secrets.T }}"},
    )
    with pytest.raises(IntegrationError) as caught:
        await call_integration(http, definition, {}, secrets={"T": TOKEN})
    error = str(caught.value)
    assert error.startswith("integration 'tickets': HTTP 401 from 127.0.0.1:"), error
    assert error.endswith("/ *** / ***"), error  # upper-cased and URL-encoded, both hidden
    basic_left = error.split("denied: Basic ", 1)[1].split(" / ", 1)[0]
    assert "***" in basic_left and len(basic_left.replace("***", "")) <= 8, basic_left


async def test_database_errors_do_not_show_bound_parameters(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    sealed = "gAAAA-sealed-secret-that-must-not-be-shown"
    with pytest.raises(IntegrityError) as caught:
        async with transaction(sessions) as session:
            session.add(Secret(tenant_id="no-such-tenant", name="X", sealed_value=sealed))
    assert sealed not in str(caught.value)
    assert "hidden" in str(caught.value)
