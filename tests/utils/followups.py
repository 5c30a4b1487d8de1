"""Follow-up definitions for tests: one approval follow-up, changed where a test needs it."""

from __future__ import annotations

import copy
from typing import Any, Final

EXAMPLE_ITSM = "https://itsm.example.com"


class _Remove:
    def __repr__(self) -> str:
        return "REMOVE"


REMOVE: Final = _Remove()
"""An override value that takes the key out of the definition."""


def followup_definition(itsm: str = EXAMPLE_ITSM, **overrides: Any) -> dict[str, Any]:
    """The approval follow-up of design/API.md, its ITSM at ``itsm``, with ``overrides``.

    Overrides go in by key: a dict is merged into the default one (``message={"card":
    {"title": ...}}`` changes the title only), any other value replaces it (lists too),
    and ``REMOVE`` takes the key out. The default, with the example ITSM, is the API.md
    example exactly (tests/test_followup_definitions.py keeps them in step).
    """
    tickets = f"{itsm}/api/tickets"
    default: dict[str, Any] = {
        "name": "Tickets pending approval",
        "status": "active",
        "data_extraction": {
            "polling_minutes": 10,
            "integrations": [
                {
                    "name": "tickets",
                    "method": "GET",
                    "url": f"{tickets}?state=pending_approval",
                    "headers": {"Authorization": "Bearer {{ secrets.ITSM_TOKEN }}"},
                    "timeout_seconds": 30,
                }
            ],
            "set_attributes": [
                {
                    "scope": "global",
                    "name": "pending_count",
                    "value": "{{ tickets.result | length }}",
                }
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
                        "url": tickets + "/{{ followup.data.number }}/escalate",
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
                        "url": tickets + "/{{ followup.data.number }}/approve",
                    },
                }
            ]
        },
        "exit": {"on_record_resolved": True, "on_reply": False},
    }
    return _merged(default, overrides)


def _merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is REMOVE:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
