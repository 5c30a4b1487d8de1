"""How long the worst templates we know of hold the worker's event loop.

Each template is rendered as a send would render it; the figure is the wall time of one
render (the event loop is blocked for exactly that long). Exits non-zero when any render
takes longer than the target.

    .venv/bin/python -m bench.templates [--target-ms 25] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import time

from nudge.templating import TemplateProblem, render

WORST = {
    "power 7**3000000 (1.6 s before the sandbox)": "{{ 7**3000000 }}",
    "power 9**99999999 (minutes before)": "{{ 9**99999999 }}",
    "products of big numbers": "{{ (10**1000) * (10**1000) * (10**1000) * (10**1000) }}",
    "string repetition": "{{ 'x' * 1000000000 }}",
    "list repetition": "{{ [1] * 100000000 }}",
    "center filter": "{{ 'a'|center(1000000000) }}",
    "str.format width": "{{ '{:>999999999}'.format(1) }}",
    "%-format width": "{{ '%999999999d' % 1 }}",
    "huge range": "{{ range(100000000)|list|length }}",
    "nested loops": "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}"
    "{% endfor %}",
    "empty nested loops": "{% for i in range(10000) %}{% for j in range(10000) %}"
    "{% endfor %}{% endfor %}",
    "doubling a string": "{% set ns = namespace(s='a') %}{% for i in range(40) %}"
    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
    "endless recursion": "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "an ordinary reminder": "Approval needed: {{ followup.data.number }} for {{ contact.name }}",
}
CONTEXT = {"followup": {"data": {"number": "INC0012"}}, "contact": {"name": "Ada"}}


def measure(source: str, repeat: int) -> tuple[float, str]:
    """The slowest of ``repeat`` renders, in milliseconds, and how it ended."""
    worst, outcome = 0.0, ""
    for _ in range(repeat):
        started = time.perf_counter()
        try:
            outcome = f"rendered {len(render(source, CONTEXT))} characters"
        except TemplateProblem as exc:
            outcome = f"refused: {exc}"
        worst = max(worst, (time.perf_counter() - started) * 1000)
    return worst, outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target-ms", type=float, default=25.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    slowest = 0.0
    for name, source in WORST.items():
        ms, outcome = measure(source, args.repeat)
        slowest = max(slowest, ms)
        print(f"{ms:8.2f} ms  {name:45}  {outcome[:90]}")
    print(f"slowest render: {slowest:.1f} ms (target {args.target_ms:g} ms)")
    return 0 if slowest <= args.target_ms else 1


if __name__ == "__main__":
    sys.exit(main())
