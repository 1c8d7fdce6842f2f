"""The modules `fivetran deploy` ships import each other one way: orchestration above the passes, the passes above what
they share, that above the client and configuration. No circle, and no pass reaches into `sync.py`."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imports() -> dict[str, set[str]]:
    """Each top-level module's imports of other top-level modules, those made only for type checking included."""
    modules = {path.stem: path for path in ROOT.glob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
        graph[name] = found & set(modules) - {name}
    return graph


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph, done, circles = imports(), set(), []

    def visit(module: str, path: list[str]) -> None:
        for imported in sorted(graph[module]):
            if imported in path:
                circles.append(" -> ".join([*path[path.index(imported) :], imported]))
            elif imported not in done:
                visit(imported, [*path, imported])
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert not circles


def test_only_the_connector_imports_sync() -> None:
    """What a pass may do to the destination is `table_sink.TableSink`'s, never `sync.TableSync`'s."""
    assert {name for name, imported in imports().items() if "sync" in imported} == {"connector"}
