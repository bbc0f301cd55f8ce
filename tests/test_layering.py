"""The import layering of the code folders, read from their source (nothing is imported).

- The composition root (server, services, wiring, the CLI) imports everything
  and nothing imports it.
- The shared core (events, errors, ids, tokens, the provider protocol, the
  settings and their loader) reaches no feature package, not even through a
  package ``__init__``.
- Packages form no import cycle.

Imports under ``if TYPE_CHECKING:`` are not counted (they never run); imports
inside functions are (they run, just later).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"app": "toolrelay.app", "agent": "toolrelay.agent", "tools": "toolrelay.tools", "memory": "toolrelay.memory"}

COMPOSITION_ROOT = frozenset(
    {
        "toolrelay.app.__main__",
        "toolrelay.app.admin_cli",
        "toolrelay.app.cli",
        "toolrelay.app.db_cli",
        "toolrelay.app.db_copy",
        "toolrelay.app.server",
        "toolrelay.app.services",
        "toolrelay.app.wiring",
    }
)
SHARED_CORE = frozenset(
    {
        "toolrelay.app.config",
        "toolrelay.app.errors",
        "toolrelay.app.events",
        "toolrelay.app.ids",
        "toolrelay.app.providers.base",
        "toolrelay.app.settings",
        "toolrelay.app.tokens",
    }
)
FEATURE_PACKAGES = (
    "toolrelay.agent",
    "toolrelay.tools",
    "toolrelay.memory",
    "toolrelay.app.auth",
    "toolrelay.app.cache",
    "toolrelay.app.mcp_server",
    "toolrelay.app.responses",
    "toolrelay.app.routes",
    "toolrelay.app.tracing",
)


def module_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder, package in FOLDERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(source: str, module: str, *, is_package: bool) -> set[str]:
    """Every module name ``source`` imports at run time, relative imports resolved."""
    names: set[str] = set()

    def visit(nodes: Iterable[ast.AST]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _type_checking(node):
                visit(node.orelse)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                names.add(target)
                # `from package import module` imports the module.
                names.update(f"{target}.{alias.name}" for alias in node.names)
            else:
                visit(ast.iter_child_nodes(node))

    visit(ast.parse(source).body)
    return names


def _with_parents(name: str, known: dict[str, Path]) -> set[str]:
    """Importing a.b.c runs a/__init__ and a/b/__init__ first."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(2, len(parts) + 1)} & known.keys()


def import_graph() -> dict[str, set[str]]:
    known = module_files()
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        targets: set[str] = set()
        for name in imported_names(path.read_text(), module, is_package=path.name == "__init__.py"):
            if name.startswith("toolrelay."):
                targets |= _with_parents(name, known)
        graph[module] = targets - {module}
    return graph


def package_of(module: str) -> str:
    if module in COMPOSITION_ROOT:
        return "composition root"
    parts = module.split(".")
    if parts[1] == "app" and len(parts) > 2 and parts[2] in ("auth", "cache", "mcp_server", "providers", "responses", "routes", "tokenizer", "tracing"):
        return ".".join(parts[:3])
    if parts[1] == "tools" and len(parts) > 2 and parts[2] == "sandbox":
        return "toolrelay.tools.sandbox"
    return ".".join(parts[:2])


def _in(module: str, packages: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


# --------------------------------------------------------------------------- the reader itself


@pytest.mark.parametrize(
    ("source", "module", "is_package", "expected"),
    [
        ("import toolrelay.app.config", "toolrelay.app.x", False, {"toolrelay.app.config"}),
        ("from toolrelay.app import config", "toolrelay.app.x", False, {"toolrelay.app", "toolrelay.app.config"}),
        ("from .settings import S", "toolrelay.tools.sandbox.base", False, {"toolrelay.tools.sandbox.settings", "toolrelay.tools.sandbox.settings.S"}),
        ("from .base import B", "toolrelay.tools.sandbox", True, {"toolrelay.tools.sandbox.base", "toolrelay.tools.sandbox.base.B"}),
        ("from ..base import T", "toolrelay.tools.sandbox.x", False, {"toolrelay.tools.base", "toolrelay.tools.base.T"}),
        ("def f():\n    from toolrelay.agent import runner", "m.x", False, {"toolrelay.agent", "toolrelay.agent.runner"}),
        ("if TYPE_CHECKING:\n    import toolrelay.agent\nelse:\n    import toolrelay.tools", "m.x", False, {"toolrelay.tools"}),
        ("if typing.TYPE_CHECKING:\n    import toolrelay.agent", "m.x", False, set()),
    ],
)
def test_imported_names(source: str, module: str, is_package: bool, expected: set[str]) -> None:
    assert imported_names(source, module, is_package=is_package) == expected


def test_the_graph_sees_known_edges() -> None:
    graph = import_graph()
    assert set(COMPOSITION_ROOT | SHARED_CORE) <= graph.keys()
    assert "toolrelay.app.services" in graph["toolrelay.app.server"]
    assert "toolrelay.app.settings" in graph["toolrelay.app.config"]
    # Through the package: importing tools.sandbox.selector runs tools/sandbox/__init__.
    assert "toolrelay.tools.sandbox" in graph["toolrelay.app.wiring"]


# --------------------------------------------------------------------------- the rules


def test_nothing_imports_the_composition_root() -> None:
    graph = import_graph()
    offenders = sorted(f"{module} -> {target}" for module, targets in graph.items() if module not in COMPOSITION_ROOT for target in targets & COMPOSITION_ROOT)
    assert offenders == []


def test_the_shared_core_reaches_no_feature_package() -> None:
    graph = import_graph()
    for module in sorted(SHARED_CORE):
        seen: set[str] = set()
        todo = [module, *_with_parents(module, module_files())]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            todo.extend(graph.get(current, ()))
        reached = sorted(m for m in seen if _in(m, FEATURE_PACKAGES) or m in COMPOSITION_ROOT)
        assert reached == [], f"{module} imports, directly or not: {reached}"


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := walk(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := walk(node)):
            return found
    return None


def test_cycle_finder() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_between_packages() -> None:
    edges: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        for target in targets:
            if module.startswith(target + "."):
                continue  # a module's own parent packages
            if package_of(target) != package_of(module):
                edges.setdefault(package_of(module), set()).add(package_of(target))
    assert _cycle(edges) is None, f"packages import each other: {' -> '.join(_cycle(edges) or [])}"
