"""Journey templates: several journeys in one file that refer to each other as ``@<key>``.

A template is imported as a whole (``nudge.store.journey_templates``): every journey is
created, the symbolic references are replaced by the new ids, and every journey is
published. The shipped multi-level chat menu (``nudge/templates/chat-menu.json``) is one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nudge.errors import InvalidInput
from nudge.models.journeys import JourneyDefinition, TriggerJourneyStep
from nudge.models.validation import Loc

TEMPLATES_DIR = Path(__file__).parent.parent / "templates"
CHAT_MENU = "chat-menu"
TEMPLATE_KEY = r"^[a-z0-9][a-z0-9_-]{0,62}$"
REFERENCE_PREFIX = "@"


class JourneyTemplate(BaseModel):
    """Journeys that refer to each other; a `trigger_journey` step names another as `@key`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "template": "two-level menu",
                    "journeys": {
                        "main": {
                            "name": "Main menu",
                            "trigger": {"type": "incoming_message", "keywords": ["menu"]},
                            "steps": [
                                {"id": "go", "type": "trigger_journey", "journey_id": "@more"}
                            ],
                        },
                        "more": {
                            "name": "More",
                            "trigger": {"type": "manual"},
                            "steps": [{"id": "done", "type": "end"}],
                        },
                    },
                }
            ]
        },
    )

    template: Annotated[str, Field(max_length=100)] | None = Field(
        default=None, description="The template's name."
    )
    description: Annotated[str, Field(max_length=2000)] | None = None
    journeys: Annotated[
        dict[Annotated[str, Field(pattern=TEMPLATE_KEY)], dict[str, Any]],
        Field(min_length=1, max_length=50),
    ] = Field(description="key → journey definition; `@key` in `journey_id` names another one.")


def load_template(name: str) -> JourneyTemplate:
    """A template shipped with Nudge, by file name without `.json`."""
    text = (TEMPLATES_DIR / f"{name}.json").read_text(encoding="utf-8")
    return JourneyTemplate.model_validate(json.loads(text))


def validated_definitions(template: JourneyTemplate) -> dict[str, JourneyDefinition]:
    """Every definition checked, with the problems of all of them at once."""
    problems: list[tuple[Loc, str]] = []
    definitions: dict[str, JourneyDefinition] = {}
    for key, raw in template.journeys.items():
        try:
            definitions[key] = JourneyDefinition.model_validate(raw)
        except ValidationError as exc:
            problems += [(("body", "journeys", key, *e["loc"]), e["msg"]) for e in exc.errors()]
            continue
        problems += _unknown_references(key, definitions[key], template)
    if problems:
        raise InvalidInput(problems)
    return definitions


def _unknown_references(
    key: str, definition: JourneyDefinition, template: JourneyTemplate
) -> list[tuple[Loc, str]]:
    """A template refers to its own journeys only: an id from another tenant means nothing."""
    problems: list[tuple[Loc, str]] = []
    for i, step in enumerate(definition.steps):
        if not isinstance(step, TriggerJourneyStep):
            continue
        target = step.journey_id
        loc: Loc = ("body", "journeys", key, "steps", i, "journey_id")
        if not target.startswith(REFERENCE_PREFIX):
            problems.append((loc, f"name a journey of this template as '@<key>', not {target!r}"))
        elif target[1:] not in template.journeys:
            problems.append((loc, f"no journey {target[1:]!r} in this template"))
        elif target[1:] == key:
            problems.append((loc, "a journey cannot trigger itself; use `jump_to`"))
    return problems


def resolved_references(definition: JourneyDefinition, ids: dict[str, str]) -> JourneyDefinition:
    steps = [
        step.model_copy(update={"journey_id": ids[step.journey_id[1:]]})
        if isinstance(step, TriggerJourneyStep)
        else step
        for step in definition.steps
    ]
    return definition.model_copy(update={"steps": steps})
