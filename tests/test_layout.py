"""The package's layout rules, read from the source (with `ast`, nothing is imported).

- Production code never imports the development-only `nudge.dev` package.
- The layers depend one way: workflows on almost nothing, store and models never on the
  layers above them, and so on (`LAYER_RULES`).
- No import cycle between the modules of `nudge`.

Imports inside functions count as much as those at the top of a module; so do imports under
`if TYPE_CHECKING:` for the layer rules (they are still a dependency of the code), though not
for cycles (they never run, so they cannot take part in an import cycle).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "nudge"

# Who may import the development-only package: itself and the `nudge dev` command. The API
# mounts the sample ITSM only in development, from a function-level import under
# `if settings.env == "development"`, so a production process never loads it.
DEV = "nudge.dev"
DEV_IMPORTERS = ("nudge.dev", "nudge.cli")
DEV_GUARDED_IMPORTS = {("nudge.api.app", "nudge.dev.sample_itsm")}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. nudge.store.tenants
    path: str  # its file, relative to the repository
    line: int
    target: str  # the imported module as written, resolved to an absolute name
    in_function: bool
    type_checking_only: bool
    development_only: bool  # under an `if` that tests for "development"

    def __str__(self) -> str:
        return f"{self.path}:{self.line} imports {self.target}"


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _mentions_development(test: ast.expr) -> bool:
    return any(
        isinstance(node, ast.Constant) and node.value == "development" for node in ast.walk(test)
    )


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = package[: len(package) - (node.level - 1)]
        prefix = ".".join([*base, node.module] if node.module else base)
    else:
        prefix = node.module or ""
    # `from nudge.store import tenants` imports the submodule; `from nudge.store import x`
    # (a name) the package. Both are recorded as prefix.name; resolve() picks the module.
    return [f"{prefix}.{alias.name}" if alias.name != "*" else prefix for alias in node.names]


def _imports_of(path: Path) -> Iterator[Import]:
    module = module_name(path)
    is_package = path.name == "__init__.py"
    relative = str(path.relative_to(ROOT))
    tree = ast.parse(path.read_text(), filename=relative)

    def walk(
        nodes: Iterable[ast.AST], in_function: bool, type_checking: bool, development: bool
    ) -> Iterator[Import]:
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _targets(node, module, is_package):
                    if within(target, "nudge"):
                        yield Import(
                            module, relative, node.lineno, target,
                            in_function, type_checking, development,
                        )  # fmt: skip
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield from walk(ast.iter_child_nodes(node), True, type_checking, development)
            elif isinstance(node, ast.If):
                yield from walk(
                    node.body,
                    in_function,
                    type_checking or _is_type_checking(node.test),
                    development or _mentions_development(node.test),
                )
                yield from walk(node.orelse, in_function, type_checking, development)
            else:
                yield from walk(ast.iter_child_nodes(node), in_function, type_checking, development)

    yield from walk(tree.body, False, False, False)


SOURCES = sorted(PACKAGE.rglob("*.py"))
MODULES = {module_name(path) for path in SOURCES}
IMPORTS = [found for path in SOURCES for found in _imports_of(path)]


def resolve(target: str) -> str:
    """The module an import loads: the longest prefix of the dotted name that is a module."""
    parts = target.split(".")
    while parts and ".".join(parts) not in MODULES:
        parts.pop()
    return ".".join(parts)


def test_the_scan_sees_the_package() -> None:
    # Guards against the rules below passing on nothing.
    assert {"nudge.cli", "nudge.workers.worker", "nudge.dev.stack", "nudge.api.app"} <= MODULES
    assert any(i.module == "nudge.cli" and within(i.target, DEV) for i in IMPORTS)


def test_production_code_never_imports_the_dev_package() -> None:
    offending = [
        i
        for i in IMPORTS
        if within(i.target, DEV)
        and not any(within(i.module, allowed) for allowed in DEV_IMPORTERS)
        and not (
            (i.module, resolve(i.target)) in DEV_GUARDED_IMPORTS
            and i.in_function
            and i.development_only
        )
    ]
    assert not offending, (
        "nudge.dev is development only; production modules must not import it:\n"
        + "\n".join(f"  {i}" for i in offending)
    )


@dataclass(frozen=True)
class LayerRule:
    layer: str
    allowed: tuple[str, ...] | None = None  # only these nudge packages, when set
    forbidden: tuple[str, ...] = ()

    def breaks(self, found: Import) -> str | None:
        if self.allowed is not None and not any(within(found.target, a) for a in self.allowed):
            return f"{self.layer} may import only {', '.join(self.allowed)}"
        for package in self.forbidden:
            if within(found.target, package):
                return f"{self.layer} must not import {package}"
        return None


def packages(names: str) -> tuple[str, ...]:
    return tuple(f"nudge.{name}" for name in names.split())


LAYER_RULES = [
    # nudge.activities only for typed references to the activities a workflow calls.
    LayerRule("nudge.workflows", allowed=packages("workflows activities models naming")),
    LayerRule("nudge.activities", forbidden=packages("workflows api workers")),
    LayerRule("nudge.store", forbidden=packages("api activities workflows runs workers")),
    LayerRule("nudge.models", forbidden=packages("store api activities workflows runs")),
    LayerRule("nudge.runs", forbidden=packages("workflows api activities workers messaging")),
    LayerRule("nudge.messaging", forbidden=packages("workflows api activities runs workers dev")),
    LayerRule(
        "nudge.integrations",
        forbidden=packages("workflows api activities runs workers store messaging dev"),
    ),
    LayerRule("nudge.api", forbidden=packages("workflows activities workers")),
]


@pytest.mark.parametrize("rule", LAYER_RULES, ids=lambda rule: rule.layer)
def test_layers_depend_one_way(rule: LayerRule) -> None:
    offending = [
        f"  {found} ({why})"
        for found in IMPORTS
        if within(found.module, rule.layer) and (why := rule.breaks(found)) is not None
    ]
    assert not offending, f"{rule.layer} breaks the layer rule:\n" + "\n".join(offending)


def import_graph() -> dict[str, dict[str, Import]]:
    """module -> {imported module: the first import of it}, without TYPE_CHECKING imports."""
    graph: dict[str, dict[str, Import]] = {module: {} for module in MODULES}
    for found in IMPORTS:
        target = resolve(found.target)
        if found.type_checking_only or not target or target == found.module:
            continue
        graph[found.module].setdefault(target, found)
    return graph


def strongly_connected(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively: the components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def one_cycle(graph: dict[str, dict[str, Import]], component: list[str]) -> list[Import]:
    """A shortest cycle through the component's first module, as the imports that make it."""
    members = set(component)
    start = component[0]
    paths: dict[str, list[Import]] = {start: []}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for successor, found in sorted(graph[node].items()):
                if successor == start:
                    return [*paths[node], found]
                if successor in members and successor not in paths:
                    paths[successor] = [*paths[node], found]
                    following.append(successor)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # cannot happen in a component


def test_no_import_cycles() -> None:
    graph = import_graph()
    cycles = []
    for component in strongly_connected(graph):
        steps = "\n".join(f"    {found}" for found in one_cycle(graph, component))
        cycles.append(f"  between {', '.join(component)}, e.g.:\n{steps}")
    assert not cycles, "import cycles in nudge:\n" + "\n".join(cycles)
