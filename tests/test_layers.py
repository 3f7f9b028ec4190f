"""The library's packages depend one way (docs/architecture.md): read every import of every
module, the ones inside functions too, and find no circle between packages and no private name
taken from another module."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {"workbench": ROOT / "workbench", "workbench.widgets": ROOT / "widgets"}


def library_modules() -> dict[str, Path]:
    """Dotted module name -> file, for the library and its panels."""
    modules = {}
    for prefix, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            if "export_files" in path.parts or "metrics" in path.parts[-3:-1]:
                continue  # files copied out with an export; evaluate's metric scripts
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((prefix, *parts))] = path
    return modules


def imports_of(module: str, path: Path) -> list[tuple[str, str | None, int]]:
    """(imported module, name taken from it or None, line) for every import in the file."""
    found = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found += [(base, alias.name, node.lineno) for alias in node.names]
    return [entry for entry in found if entry[0].startswith("workbench")]


def package_of(module: str, modules: dict[str, Path]) -> str:
    """The layer a module belongs to: `workbench.<first part>` (top-level files are their own)."""
    parts = module.split(".")
    if module.startswith("workbench.widgets"):
        return "workbench.widgets"
    return ".".join(parts[:2]) if len(parts) > 1 else module


def package_graph() -> dict[str, dict[str, list[str]]]:
    """package -> imported package -> ['module:line', ...] (the places that make the arrow)."""
    modules = library_modules()
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for module, path in modules.items():
        source = package_of(module, modules)
        for target, _, line in imports_of(module, path):
            imported = package_of(target, modules)
            if imported != source and imported != "workbench":
                graph[source][imported].append(f"{path.relative_to(ROOT)}:{line}")
    return graph


def circles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """Every elementary circle's packages, found by a depth-first walk from each package."""
    found = set()

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in graph.get(node, {}):
            if nxt == start:
                found.add(tuple(path))
            elif nxt not in path and nxt > start:  # each circle once, from its least package
                walk(start, nxt, [*path, nxt])

    for start in sorted(graph):
        walk(start, start, [start])
    return [list(circle) for circle in sorted(found)]


def test_no_circle_between_the_librarys_packages():
    graph = package_graph()
    problems = []
    for circle in circles(graph):
        arrows = zip(circle, [*circle[1:], circle[0]])
        places = [f"{a} -> {b} ({', '.join(graph[a][b][:3])})" for a, b in arrows]
        problems.append(" | ".join(places))
    assert not problems, "import circles between packages:\n" + "\n".join(problems)


def test_no_private_name_is_imported_from_another_module():
    modules = library_modules()
    borrowed = [
        f"{path.relative_to(ROOT)}:{line} takes {name} from {target}"
        for module, path in modules.items()
        for target, name, line in imports_of(module, path)
        if name
        and name.startswith("_")
        and not name.startswith("__")
        and target != module
        and f"{target}.{name}" not in modules  # a package's own private module is its own
    ]
    assert not borrowed, "private names used across modules:\n" + "\n".join(borrowed)


def test_the_check_sees_imports_inside_functions(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from workbench.runs.run import Run\n    from . import x\n")
    assert imports_of("workbench.training.m", path) == [
        ("workbench.runs.run", "Run", 2),
        ("workbench.training", "x", 3),
    ]
    graph = {"a": {"b": ["x:1"]}, "b": {"c": ["y:2"]}, "c": {"a": ["z:3"]}}
    assert circles(graph) == [["a", "b", "c"]]
