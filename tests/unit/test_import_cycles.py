"""No module of `supervisor` imports itself back, however indirectly (issue 16.5).

The graph is read from the source with `ast`, so an import under `if TYPE_CHECKING:`
or inside a function counts as much as one at the top: a cycle only type checkers
follow still ties the modules' designs together, and is one edit from a real one.

Python initialises a package before any of its submodules, so a submodule does not
depend on its package's `__init__` by being in it: that edge is not drawn. What a
module names in an import (`from supervisor.control import server`, or a name that
an `__init__` defines) is drawn, so an `__init__` that imports a submodule which
imports the package back is a cycle here too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import supervisor

PACKAGE = Path(supervisor.__file__).parent


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = [PACKAGE.name, *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of `supervisor` that module `name` (at `path`) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up `level - 1` more
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    found.add(f"{base}.{alias.name}")  # a submodule
                elif base in modules:
                    found.add(base)  # a name the module defines
    found.discard(name)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each cycle of `graph` as one path around it (one per strongly connected part)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    parts: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the graph is a few dozen modules
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            part = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                part.add(member)
                if member == node:
                    break
            if len(part) > 1:
                parts.append(part)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_path_around(part, graph) for part in parts]


def _path_around(part: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A path from the first module of `part` back to itself, within `part`."""
    start = min(part)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        for target in sorted(graph[node] & part):
            if target == start:
                return [*paths[node], start]
            if target not in paths:
                paths[target] = [*paths[node], target]
                frontier.append(target)
    raise AssertionError(f"no path around {sorted(part)}")


def test_no_module_imports_itself_back() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert len(graph) > 40  # the walk found the package
    cycles = [" -> ".join(cycle) for cycle in _cycles(graph)]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_check_finds_a_cycle_through_type_checking_imports() -> None:
    """The graph of a cycle that only `if TYPE_CHECKING:` closes has that cycle."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_imports_under_type_checking_are_drawn(tmp_path: Path) -> None:
    path = tmp_path / "x.py"
    path.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from supervisor.daemon import Supervisor\n"
        "def f():\n"
        "    from supervisor.control import server\n"
    )
    modules = _modules()
    found = _imports("supervisor.x", path, modules)
    assert found == {"supervisor.daemon", "supervisor.control.server"}
