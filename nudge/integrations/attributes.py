"""Set Attributes: templated values assigned to the local, global or contact scope."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nudge.models.integrations import SetAttribute
from nudge.templating import TemplateProblem, render


@dataclass
class AttributeChanges:
    """Attributes assigned by Set Attributes, by scope (``global_`` is the ``global`` scope)."""

    local: dict[str, Any] = field(default_factory=dict)
    global_: dict[str, Any] = field(default_factory=dict)
    contact: dict[str, Any] = field(default_factory=dict)


def apply_set_attributes(
    items: Sequence[SetAttribute], context: Mapping[str, Any]
) -> AttributeChanges:
    """Render each item's value, in order; return the values by scope.

    A rendered value that is valid JSON becomes that JSON value (``{{ x | length }}`` gives
    the int 3, ``{{ x | tojson }}`` a list or object, ``true`` a bool, ``"7"`` the string
    7); anything else (including ``007`` and ``NaN``) stays the rendered string.

    Each item sees the ones before it: ``local`` and ``global`` in the template context,
    and ``contact.attributes`` when the context has a ``contact``. The caller's mapping is
    not changed. ``secrets`` are left out of the context (a template that reads them fails):
    attribute values are stored and shown, so a secret must never become one.

    Raises ``TemplateProblem`` naming the attribute.
    """
    changes = AttributeChanges()
    scopes = {"local": changes.local, "global": changes.global_, "contact": changes.contact}
    templates = {key: value for key, value in context.items() if key != "secrets"}
    for item in items:
        try:
            text = render(item.value, templates)
        except TemplateProblem as exc:
            raise TemplateProblem(f"set attribute {item.scope}.{item.name}: {exc}") from None
        scopes[item.scope][item.name] = _typed(text)
        templates = _with_changes(context, templates, changes)
    return changes


def _typed(text: str) -> Any:
    """The JSON value ``text`` spells, or ``text`` itself when it is not (finite) JSON."""
    if not text.strip():
        return text
    try:
        return json.loads(text, parse_constant=_not_json, parse_float=_finite_float)
    except ValueError:
        return text


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _finite_float(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        raise ValueError(f"{literal} is out of range")
    return number


def _with_changes(
    original: Mapping[str, Any], templates: dict[str, Any], changes: AttributeChanges
) -> dict[str, Any]:
    """``templates`` with the changes so far laid over the caller's attributes."""
    updated = dict(templates)
    updated["local"] = {**_mapping(original.get("local")), **changes.local}
    updated["global"] = {**_mapping(original.get("global")), **changes.global_}
    contact = original.get("contact")
    if isinstance(contact, Mapping) and changes.contact:
        attributes = {**_mapping(contact.get("attributes")), **changes.contact}
        updated["contact"] = {**contact, "attributes": attributes}
    return updated


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
