"""What message templates see, feature by feature: the one place that says it.

=============  ==========================================================================
feature        names a message template may use
=============  ==========================================================================
notification   ``contact``
follow-up      ``followup`` (``data``, ``attempt``, ``attempts``, ``name``,
               ``reconciliation_id``), ``local``, ``global``, ``contact``
journey        ``contact``, ``variables``, ``answer``
=============  ==========================================================================

``recipient`` is the same as ``contact`` everywhere (follow-ups called it so first).
A message that names anything else is refused when it is saved, naming the field and the
name, instead of rendering as empty text at send time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from nudge.models.messages import (
    AnyMessage,
    CardMessage,
    TextMessage,
    WhatsAppTemplate,
    WhatsAppTemplateMessage,
)
from nudge.models.validation import Loc, Problem
from nudge.templating import names_read

CONTACT_NAMES = frozenset({"contact", "recipient"})
NOTIFICATION_NAMES = CONTACT_NAMES
FOLLOWUP_NAMES = CONTACT_NAMES | {"followup", "local", "global"}
JOURNEY_NAMES = CONTACT_NAMES | {"variables", "answer"}

# Names every template has: what the sandbox provides, and what Jinja defines itself.
_BUILTINS = frozenset({"range", "dict", "namespace", "loop", "self", "varargs", "kwargs"})


def message_context(contact: Mapping[str, Any], **parts: Any) -> dict[str, Any]:
    """A message template's context: the feature's ``parts`` and the contact under both names."""
    return {**parts, "contact": contact, "recipient": contact}


def _template_sources(template: WhatsAppTemplate, prefix: Loc) -> Iterator[tuple[Loc, str]]:
    for part in ("header", "body", "buttons"):
        for i, value in enumerate(getattr(template, part)):
            yield (*prefix, part, i), value
    if template.text is not None:
        yield (*prefix, "text"), template.text


def message_sources(message: AnyMessage, prefix: Loc = ("message",)) -> Iterator[tuple[Loc, str]]:
    """Every template of a message, with its path."""
    if isinstance(message, WhatsAppTemplateMessage):
        yield from _template_sources(message.template, (*prefix, "template"))
        return
    if message.outside_window is not None:
        yield from _template_sources(message.outside_window, (*prefix, "outside_window"))
    if isinstance(message, TextMessage):
        yield (*prefix, "text"), message.text
    elif isinstance(message, CardMessage):
        card = message.card
        yield (*prefix, "card", "title"), card.title
        yield (*prefix, "card", "text"), card.text
        if card.image_url is not None:
            yield (*prefix, "card", "image_url"), card.image_url
        for i, button in enumerate(card.buttons):
            yield (*prefix, "card", "buttons", i, "label"), button.label
    else:
        yield (*prefix, "image", "url"), message.image.url
        yield (*prefix, "image", "caption"), message.image.caption


def names_used(source: str) -> set[str]:
    """The top-level names a template reads, but those every template has."""
    return names_read(source) - _BUILTINS


def unknown_names(
    message: AnyMessage,
    allowed: frozenset[str],
    prefix: Loc = ("message",),
) -> list[Problem]:
    """A problem for each name a message uses that its feature does not have."""
    known = ", ".join(sorted(allowed))
    return [
        (loc, "unknown_variable", f"unknown variable {name!r}: this template knows {known}", name)
        for loc, source in message_sources(message, prefix)
        for name in sorted(names_used(source) - allowed)
    ]
