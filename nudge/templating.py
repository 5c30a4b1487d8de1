"""Jinja2 in a sandbox: compiled when a definition is saved, rendered when a message is sent.

Templates are written by tenants and rendered against data from customers and external
systems, so a template must not be able to exhaust a worker that serves every tenant:

- nothing is evaluated while compiling (constant folding off), so a definition is never
  slow to save and customer text is never compiled at all (rendered text is data);
- arithmetic and repetition that would build huge values are refused before they run
  (``9**99999999``, ``"x" * 10**9``, ``"a"|center(10**9)``, ``"%999999999d" % 1``);
- ``range`` is capped at ``MAX_RANGE`` items, the output at ``MAX_OUTPUT`` characters, and
  a render at ``TIME_BUDGET`` seconds of work (what blocks the worker's event loop).

Every failure is a ``TemplateProblem`` (a template that fails renders the same way on a
retry, so callers treat it as permanent).
"""

from __future__ import annotations

import functools
import re
import sys
import time
from collections.abc import Callable, Iterator, Sized
from functools import lru_cache
from types import FrameType
from typing import Any

from jinja2 import TemplateError, meta, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_OUTPUT = 65_536  # characters of one rendered template
MAX_RANGE = 10_000  # items of one range()
MAX_INT_BITS = 4_096  # about 1 200 decimal digits: plenty for any message
TIME_BUDGET = 0.010  # seconds of rendering before it is refused as too expensive

_PRINTF_WIDTH = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_FORMAT_WIDTH = re.compile(r"\{[^{}]*?:[^{}]*?(\d{6,})")


class TemplateProblem(ValueError):
    """A template that does not compile or cannot be rendered."""


class TemplateTooExpensive(TemplateProblem):
    """A template whose rendering would take more time or memory than a message may."""


def _refuse(what: str) -> TemplateTooExpensive:
    return TemplateTooExpensive(f"template too expensive to render: {what}")


def _big_int(value: Any) -> bool:
    return isinstance(value, int) and abs(value) > MAX_OUTPUT


def _check_printf(spec: str) -> None:
    for width, precision in _PRINTF_WIDTH.findall(spec):
        for number in (width, precision):
            if number == "*" or (number and int(number) > MAX_OUTPUT):
                raise _refuse(f"a %-format width over {MAX_OUTPUT}")


def _check_format_spec(spec: str) -> None:
    for digits in _FORMAT_WIDTH.findall(spec):
        if int(digits) > MAX_OUTPUT:
            raise _refuse(f"a format width over {MAX_OUTPUT}")


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse an operation whose result would be huge, before computing it."""
    ints = isinstance(left, int) and isinstance(right, int)
    if operator == "**" and ints and right > 0:
        if right * max(1, abs(left).bit_length()) > MAX_INT_BITS:
            raise _refuse(f"a power with more than {MAX_INT_BITS} bits")
    elif operator == "*":
        if ints and abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS:
            raise _refuse(f"a product with more than {MAX_INT_BITS} bits")
        for sequence, times in ((left, right), (right, left)):
            if (
                isinstance(sequence, Sized)
                and isinstance(times, int)
                and len(sequence) * times > MAX_OUTPUT
            ):
                raise _refuse(f"a repetition longer than {MAX_OUTPUT}")
    elif operator == "+" and isinstance(left, Sized) and isinstance(right, Sized):
        if len(left) + len(right) > MAX_OUTPUT:
            raise _refuse(f"a concatenation longer than {MAX_OUTPUT}")
    elif operator == "%" and isinstance(left, str):
        _check_printf(left)


def _guarded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)  # keeps Jinja's pass_context/pass_environment marks
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if any(_big_int(a) for a in (*args, *kwargs.values())):
            raise _refuse(f"filter {name!r} with a number over {MAX_OUTPUT}")
        if name == "format" and len(args) > 0 and isinstance(args[0], str):
            _check_printf(args[0])
        return func(*args, **kwargs)

    return guarded


def _safe_range(*args: int) -> range:
    values = range(*args)
    if len(values) > MAX_RANGE:
        raise _refuse(f"a range of more than {MAX_RANGE} items")
    return values


class _CheckedConcat(CodeGenerator):
    """Compiles ``a ~ b`` to a call that checks the length, like the intercepted operators."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.checked_concat((")
        for part in node.nodes:
            self.visit(part, frame)
            self.write(", ")
        self.write("))")


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"**", "*", "+", "%"})
    code_generator_class = _CheckedConcat

    def checked_concat(self, parts: tuple[Any, ...]) -> str:
        texts = [str(part) for part in parts]
        if sum(map(len, texts)) > MAX_OUTPUT:
            raise _refuse(f"a concatenation longer than {MAX_OUTPUT}")
        return "".join(texts)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        # The sandbox hands out str.format wrapped; the string it formats is the wrapped one's.
        owner = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)
        if isinstance(owner, str | bytes | list | tuple):
            if any(_big_int(a) for a in (*args, *kwargs.values())):
                raise _refuse(f"a method call with a number over {MAX_OUTPUT}")
            if getattr(__obj, "__name__", "") in ("format", "format_map") and isinstance(
                owner, str
            ):
                _check_format_spec(owner)
        return super().call(__context, __obj, *args, **kwargs)


def _environment() -> _Sandbox:
    # optimized=False: the optimizer would evaluate constant expressions while compiling.
    env = _Sandbox(autoescape=False, keep_trailing_newline=False, optimized=False)
    env.filters = {name: _guarded_filter(name, f) for name, f in env.filters.items()}
    env.globals = {"range": _safe_range, "dict": dict, "namespace": env.globals["namespace"]}
    return env


_env = _environment()


@lru_cache(maxsize=4096)
def _compiled(source: str) -> Any:
    return _env.from_string(source)


def names_read(source: str) -> set[str]:
    """The top-level names a template reads (``contact`` of ``{{ contact.name }}``), found
    without evaluating anything; empty for a template that does not compile."""
    try:
        return set(meta.find_undeclared_variables(_env.parse(source)))
    except TemplateError:
        return set()


def check_template(source: str) -> str:
    """Compile ``source`` and return it unchanged; raise ``TemplateProblem`` naming the error."""
    try:
        _compiled(source)
    except TemplateError as exc:
        raise TemplateProblem(f"template does not compile: {exc}") from exc
    except (RecursionError, MemoryError) as exc:
        raise TemplateProblem("template does not compile: it is nested too deeply") from exc
    return source


class _Deadline:
    """A trace function that stops a render which has worked for longer than its budget."""

    def __init__(self, budget: float) -> None:
        self._until = time.thread_time() + budget  # CPU time: a preempted render is not refused
        self._ticks = 0
        self._fired = False

    def __call__(self, frame: FrameType, event: str, arg: Any) -> Any:
        if self._fired:
            return None  # raised once: let the render unwind without tracing every frame
        self._ticks += 1
        if self._ticks % 16 == 0 and time.thread_time() > self._until:
            self._fired = True
            raise _refuse(f"it takes more than {TIME_BUDGET * 1000:.0f} ms")
        return self


def _chunks(template: Any, context: dict[str, Any]) -> Iterator[str]:
    produced = 0
    for chunk in template.generate(context):
        produced += len(chunk)
        if produced > MAX_OUTPUT:
            raise _refuse(f"output over {MAX_OUTPUT} characters")
        yield chunk


def render(source: str, context: dict[str, Any]) -> str:
    """Render ``source`` against ``context``; ``TemplateProblem`` for any failure."""
    template = _compiled(check_template(source))
    previous = sys.gettrace()
    sys.settrace(_Deadline(TIME_BUDGET))
    try:
        return "".join(_chunks(template, context))
    except TemplateProblem:
        raise
    except TemplateError as exc:
        raise TemplateProblem(f"template cannot be rendered: {exc}") from exc
    except Exception as exc:  # {{ 1 / 0 }}, a type error...: the template's own fault
        raise TemplateProblem(f"template cannot be rendered: {type(exc).__name__}: {exc}") from None
    finally:
        sys.settrace(previous)
