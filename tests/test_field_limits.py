"""Every field a client can send has a maximum, as the OpenAPI document says.

Together with the 1 MB body limit this bounds what one request can make Nudge store or
render: no string, list or map is unbounded.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from nudge.api.app import create_app
from nudge.settings import Settings

# Formats whose values are short by nature.
BOUNDED_FORMATS = {"date-time", "date", "time", "email", "uuid"}
UNBOUNDED_QUANTIFIER = re.compile(r"(?<!\\)[*+]|\{\d+,\}")


def _bounded_string(node: dict[str, Any]) -> bool:
    if any(key in node for key in ("maxLength", "enum", "const")):
        return True
    if node.get("format") in BOUNDED_FORMATS:
        return True
    pattern = node.get("pattern")
    # An anchored pattern with only bounded repetition ({0,62}) bounds the length too.
    return bool(
        pattern
        and pattern.startswith("^")
        and pattern.endswith("$")
        and not UNBOUNDED_QUANTIFIER.search(pattern)
    )


def _unbounded(name: str, node: Any, path: str, found: list[str]) -> None:
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind == "string" and not _bounded_string(node):
        found.append(f"{name}{path}: string without maxLength")
    if kind == "array" and "maxItems" not in node:
        found.append(f"{name}{path}: array without maxItems")
    extra = node.get("additionalProperties")
    if kind == "object" and extra not in (None, False) and "maxProperties" not in node:
        found.append(f"{name}{path}: map without maxProperties")
    for field, sub in node.get("properties", {}).items():
        _unbounded(name, sub, f"{path}.{field}", found)
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in node.get(key, []):
            _unbounded(name, sub, path, found)
    if "items" in node:
        _unbounded(name, node["items"], f"{path}[]", found)
    if isinstance(extra, dict):
        _unbounded(name, extra, f"{path}{{}}", found)
    if "propertyNames" in node:
        _unbounded(name, node["propertyNames"], f"{path}{{key}}", found)


def _references(node: Any, into: set[str]) -> None:
    if isinstance(node, dict):
        if "$ref" in node:
            into.add(str(node["$ref"]).rsplit("/", 1)[1])
        for value in node.values():
            _references(value, into)
    elif isinstance(node, list):
        for value in node:
            _references(value, into)


def test_every_field_of_every_request_body_has_a_maximum(tmp_path: Path) -> None:
    schema = create_app(Settings(env="test", data_dir=tmp_path)).openapi()
    components = schema["components"]["schemas"]
    todo: set[str] = set()
    for operations in schema["paths"].values():
        for operation in operations.values():
            _references(operation.get("requestBody", {}), todo)
            for parameter in operation.get("parameters", []):
                if parameter["schema"].get("type") == "string":
                    assert _bounded_string(parameter["schema"]), parameter
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        _references(components[name], todo)
    assert "FollowUpDefinition" in seen and "ContactPut" in seen  # the walk reached them
    found: list[str] = []
    for name in sorted(seen):
        _unbounded(name, components[name], "", found)
    assert found == []
