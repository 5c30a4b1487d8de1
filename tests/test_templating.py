"""The template sandbox: tenants' templates cannot exhaust a worker, and rendered text is data."""

from __future__ import annotations

import pytest

from nudge.models.messages import CardMessage, TextMessage, render_message
from nudge.templating import (
    MAX_OUTPUT,
    TemplateProblem,
    TemplateTooExpensive,
    check_template,
    render,
)

EXPENSIVE = [
    "{{ 7**3000000 }}",
    "{{ 9**99999999 }}",
    "{{ (10**1000) * (10**1000) * (10**1000) * (10**1000) * (10**1000) }}",
    "{{ 'x' * 1000000000 }}",
    "{{ [1] * 100000000 }}",
    "{{ ('a' * 60000) + ('b' * 60000) }}",
    "{{ 'a'|center(1000000000) }}",
    "{{ 'ab'|wordwrap(1000000000) }}",
    "{{ 'a'.center(1000000000) }}",
    "{{ 'a'.ljust(1000000000) }}",
    "{{ '%999999999d' % 1 }}",
    "{{ '%(a)999999999s' % {'a': 1} }}",
    "{{ '%999999999d'|format(1) }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ '{:>{}}'.format(1, 999999999) }}",
    "{{ range(100000000)|list|length }}",
    "{% set ns = namespace(s='a') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}{{ ns.s|length }}",
    "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
    "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}",
]


@pytest.mark.parametrize("source", EXPENSIVE)
def test_an_expensive_template_is_refused_as_too_expensive(source: str) -> None:
    check_template(source)  # compiling evaluates nothing, so saving is never slow
    with pytest.raises(TemplateTooExpensive, match="too expensive"):
        render(source, {})


def test_output_is_capped() -> None:
    assert len(render("{{ 'a' * n }}", {"n": MAX_OUTPUT})) == MAX_OUTPUT
    with pytest.raises(TemplateTooExpensive, match="output over"):
        render("{% for i in range(10) %}{{ text }}{% endfor %}", {"text": "a" * 10_000})


@pytest.mark.parametrize(
    "source",
    [
        "{{ 1/0 }}",
        "{{ x.__class__.__mro__ }}",
        "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    ],
)
def test_every_render_failure_is_a_template_problem(source: str) -> None:
    with pytest.raises(TemplateProblem):
        render(source, {"x": "v"})


def test_ordinary_templates_still_work() -> None:
    context = {"contact": {"name": "Ada"}, "items": ["a", "b"], "n": 3}
    source = "Hi {{ contact.name }}: {{ items|join(', ') }} {{ n * 2 }} {{ 2**10 }} {{ 'x' ~ n }}"
    assert render(source, context) == "Hi Ada: a, b 6 1024 x3"
    assert render("{% for i in range(3) %}{{ i }}{% endfor %}", {}) == "012"


def test_rendered_customer_text_goes_out_as_written() -> None:
    # A ticket text with template syntax, and a customer's attempt to make the worker compute.
    data = {"description": "see {{ x", "reply": "{{ 7**3000000 }} {% raw %}"}
    text = TextMessage(text="Ticket: {{ ticket.description }} / {{ ticket.reply }}")
    rendered = render_message(text, {"ticket": data})
    assert isinstance(rendered, TextMessage)
    assert rendered.text == "Ticket: see {{ x / {{ 7**3000000 }} {% raw %}"
    card = CardMessage.model_validate(
        {"card": {"title": "{{ ticket.description }}", "text": "{{ ticket.reply }}"}}
    )
    rendered_card = render_message(card, {"ticket": data})
    assert isinstance(rendered_card, CardMessage)
    assert (rendered_card.card.title, rendered_card.card.text) == (
        data["description"],
        data["reply"],
    )
