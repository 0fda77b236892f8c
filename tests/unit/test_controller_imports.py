"""The operator's modules import one another without a cycle, counting imports inside functions too: a cycle hidden in
a function (the metrics reading the handlers' state) still ties two modules' state together and makes their order
of import matter."""
from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

import rljob

PACKAGE = "rljob.controller"
CONTROLLER = Path(rljob.__file__).parent / "controller"


def imports_of(path: Path, package: str = PACKAGE) -> set[str]:
    """The modules of `package` that the module at `path` imports, anywhere in its body."""
    found: set[str] = set()
    parent = package.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            elif node.level == 1:
                base = ".".join(filter(None, (package, node.module)))
            else:  # `from ..x`: outside this package unless it names it again
                base = ".".join(filter(None, (parent, node.module)))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from . import x` imports module x
    return {name for name in found if name.startswith(f"{package}.")}


def import_graph(directory: Path = CONTROLLER, package: str = PACKAGE) -> dict[str, set[str]]:
    modules = {f"{package}.{path.stem}": path for path in directory.glob("*.py") if path.stem != "__init__"}
    return {name: imports_of(path, package) & modules.keys() for name, path in modules.items()}


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` (its modules in order, the first again at the end), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node):], node]
        if node in done:
            return None
        for target in sorted(graph.get(node, ())):
            cycle = visit(target, [*path, node])
            if cycle is not None:
                return cycle
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start, [])
        if cycle is not None:
            return cycle
    return None


def test_the_controller_modules_import_one_another_without_a_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 10 and f"{PACKAGE}.reconciler" in graph[f"{PACKAGE}.operator"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def reachable(graph: Mapping[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_the_metrics_read_the_operator_through_what_they_are_given_not_through_its_modules() -> None:
    graph = import_graph()
    assert not {f"{PACKAGE}.handlers", f"{PACKAGE}.operator", f"{PACKAGE}.reconciler"} & reachable(graph, f"{PACKAGE}.metrics")


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("from .c import thing\n")
    (package / "c.py").write_text("def later():\n    from .a import x\n    return x\n")
    (package / "d.py").write_text("from ..elsewhere import a\nimport pkg.c\n")
    graph = import_graph(package, "top.pkg")
    assert graph["top.pkg.d"] == set()  # `..elsewhere` and an absolute import of another package are not this one's
    assert find_cycle(graph) == ["top.pkg.a", "top.pkg.b", "top.pkg.c", "top.pkg.a"]
    (package / "c.py").write_text("thing = 1\n")
    assert find_cycle(import_graph(package, "top.pkg")) is None
