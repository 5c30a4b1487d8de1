"""The OpenAPI document tells the truth: schemathesis fuzzes the live app in-process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import schemathesis
from hypothesis import strategies as st
from schemathesis.engine import events
from schemathesis.engine import from_schema as engine_for
from schemathesis.python.asgi import get_client, shutdown_lifespans
from temporalio.testing import WorkflowEnvironment

from nudge.api.app import create_app
from nudge.models.followup_bundle import write_bundle
from nudge.settings import Settings
from tests.conftest import TenantKeys
from tests.utils.followups import followup_definition

SEED = 20_260_101
MAX_EXAMPLES = 15
MAX_STEPS = 10


def _seed(app: Any, api_key: str) -> dict[str, list[str]]:
    """A contact, a channel, a secret, an active follow-up, a published journey with the
    contact in it, and a notification: the ids schemathesis draws on, besides its own."""
    headers = {"Authorization": f"Bearer {api_key}"}
    with get_client(app) as client:

        def call(method: str, path: str, body: Any = None) -> Any:
            answer = client.request(method, path, json=body, headers=headers)
            assert answer.status_code < 300, (method, path, answer.status_code, answer.text)
            return answer.json() if answer.content else None

        call("PUT", "/v1/contacts/ada", {"name": "Ada", "email": "ada@example.com"})
        call("PUT", "/v1/channels/log", {"type": "log"})
        call("PUT", "/v1/secrets/ITSM_TOKEN", {"value": "s3cret"})
        followup = call("POST", "/v1/followups", followup_definition(channel="log"))
        step = {"id": "greet", "type": "send_message", "channel": "log"}
        journey = call(
            "POST",
            "/v1/journeys",
            {
                "name": "Onboarding",
                "trigger": {"type": "api"},
                "settings": {"allow_agents_stop": True},
                "steps": [{**step, "message": {"kind": "text", "text": "Welcome"}}],
            },
        )
        call("POST", f"/v1/journeys/{journey['id']}/publish")
        call("POST", f"/v1/journeys/{journey['id']}/enrollments", {"contact_id": "ada"})
        notification = call(
            "POST",
            "/v1/notifications",
            {"contact_id": "ada", "channel": "log", "message": {"kind": "text", "text": "Hi"}},
        )
    return {
        "contacts": ["ada"],
        "channels": ["log"],
        "followups": [followup["id"]],
        "journeys": [journey["id"]],
        "notifications": [notification["id"]],
    }


# Where the seeded ids go, besides whatever schemathesis generates.
_BINDINGS = {
    "contacts": ["path.external_id", "body.contact_id", "body.members[*]"],
    "channels": ["path.channel_id", "body.channel"],
    "followups": ["path.followup_id"],
    "journeys": ["path.journey_id"],
    "notifications": ["path.notification_id"],
}


def _config(api_key: str, known: dict[str, list[str]]) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "headers": {"Authorization": f"Bearer {api_key}"},
            "cache": {"enabled": False},
            "dictionaries": {name: {"values": values} for name, values in known.items()},
            "parameters": {
                key: {"dictionary": name, "probability": 0.5}
                for name, keys in _BINDINGS.items()
                for key in keys
            },
            "generation": {"max-examples": MAX_EXAMPLES, "mode": "all", "database": "none"},
            "phases": {
                "examples": {"enabled": False},
                "coverage": {"enabled": False},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": True, "max-steps": MAX_STEPS},
            },
            "checks": {
                "not_a_server_error": {"enabled": True},
                "status_code_conformance": {"enabled": True},
                "content_type_conformance": {"enabled": True},
                "response_schema_conformance": {"enabled": True},
                "response_headers_conformance": {"enabled": True},
                # Off: a schema-valid request can be refused with a 422 by the rules that need
                # the database (an unknown contact, channel or secret) or span several fields.
                "positive_data_acceptance": {"enabled": False},
                # A body over 1 MB is refused with 413 before it is parsed: a rejection too.
                "negative_data_rejection": {
                    "enabled": True,
                    "expected-statuses": [
                        *("400", "401", "403", "404", "405", "406", "409", "413"),
                        *("415", "422", "428", "429", "5xx"),
                    ],
                },
                # The others (ignored_auth, negative_data_rejection, use_after_free, ...) stay
                # on, as schemathesis has them by default.
            },
        }
    )


def _problems(stream: Any) -> Iterator[str]:
    """Each distinct failed check and error of the run, with a request that shows it."""
    seen: set[tuple[str, ...]] = set()
    for event in stream:
        found: list[tuple[tuple[str, ...], str]] = []
        if isinstance(event, events.ScenarioFinished):
            for checks in event.recorder.checks.values():
                for check in checks:
                    info = check.failure_info
                    if info is not None:
                        key = (event.recorder.label, check.name, info.failure.title)
                        found.append((key, f"{info.failure.title}\n{info.code_sample}"))
        elif isinstance(event, events.NonFatalError):
            key = (event.label, event.info.title, event.info.message[:120])
            found.append((key, f"{event.info.title}: {event.info.message[:1500]}"))
        elif isinstance(event, events.FatalError):
            found.append((("fatal",), repr(event.exception)))
        for key, text in found:
            if key not in seen:
                seen.add(key)
                yield f"{key[0]}: {text}"


# `POST /v1/followups/import` takes a zip: an empty export, and bytes that are no zip at all.
schemathesis.openapi.media_type(
    "application/zip", st.just(write_bundle("elsewhere", [])) | st.binary(max_size=256)
)


def test_the_openapi_document_tells_the_truth(
    settings: Settings, tenant: TenantKeys, own_time_env: WorkflowEnvironment
) -> None:
    # The app runs in schemathesis' own event loop, so it makes its own database engine and
    # Temporal client there (to this test's own server: the runs it starts never end).
    target = own_time_env.client.service_client.config.target_host
    app = create_app(settings.model_copy(update={"temporal_address": target}))
    try:
        known = _seed(app, tenant.keys["admin"])
        schema = schemathesis.openapi.from_asgi(
            "/openapi.json", app, config=_config(tenant.keys["admin"], known)
        )
        found = list(_problems(engine_for(schema).execute()))
    finally:
        shutdown_lifespans()
    assert not found, "\n\n".join(found)


def test_each_operation_names_the_errors_it_can_answer(settings: Settings) -> None:
    spec = create_app(settings).openapi()

    def statuses(method: str, path: str) -> set[str]:
        return set(spec["paths"][path][method]["responses"])

    assert statuses("get", "/v1/contacts/{external_id}") == {"200", "401", "403", "404", "422"}
    # Every role may read the inbox: no 403.
    assert "403" not in statuses("get", "/v1/contacts/{external_id}/journeys")
    # An upsert has nothing to conflict with; publishing does.
    assert statuses("put", "/v1/secrets/{name}") == {"204", "401", "403", "404", "413", "422"}
    publish = statuses("post", "/v1/journeys/{journey_id}/publish")
    assert publish == {"200", "401", "403", "404", "409", "422"}
    # Rate-limited, and a key may be in use by a request in flight. Temporal being down is
    # not an error: the run's start waits in the outbox.
    send = statuses("post", "/v1/notifications")
    assert send == {"202", "401", "403", "409", "413", "422", "429"}
    assert statuses("get", "/v1/actions/{token}") == {"200", "404", "409", "422"}
    assert statuses("get", "/healthz") == {"200", "503"}

    notifications = spec["paths"]["/v1/notifications"]["post"]["responses"]
    assert notifications["401"]["headers"]["WWW-Authenticate"]["required"]
    assert notifications["429"]["headers"]["Retry-After"]["required"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for code, response in operation["responses"].items():
                if code.startswith("4") or (code == "503" and path != "/healthz"):
                    body = "ValidationErrors" if code == "422" else "ErrorMessage"
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": f"#/components/schemas/{body}"}, (method, path)
    assert "HTTPValidationError" not in spec["components"]["schemas"]
