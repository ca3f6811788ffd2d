"""The import graph of app/, config/ and db/: config/ depends on nothing of ours, db/ not on app/, no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("app", "config", "db")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def our_imports(path: Path, modules: set[str]) -> set[str]:
    """Modules of ours that ``path`` imports when it loads (not under ``if TYPE_CHECKING:``, not in a function)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in tree.body:  # module level only: a function-level import is deliberate laziness
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for child in ast.walk(node) if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else ():
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names = [child.module] + [f"{child.module}.{alias.name}" for alias in child.names]
            else:
                continue
            found.update(name for name in names if name in modules)
    return found


def import_graph() -> dict[str, set[str]]:
    files = [path for package in PACKAGES for path in (ROOT / package).rglob("*.py") if "migrations" not in path.parts]
    modules = {module_name(path) for path in files}
    return {module_name(path): our_imports(path, modules) - {module_name(path)} for path in files}


def test_config_depends_on_nothing_of_ours() -> None:
    graph = import_graph()
    outside = {
        m: sorted(d for d in deps if not d.startswith("config")) for m, deps in graph.items() if m.startswith("config")
    }
    assert outside == {module: [] for module in outside}


def test_the_data_layer_does_not_import_the_web_layer() -> None:
    graph = import_graph()
    web = {m: sorted(d for d in deps if d.startswith("app")) for m, deps in graph.items() if m.startswith("db")}
    assert web == {module: [] for module in web}


def test_there_are_no_import_cycles() -> None:
    graph = import_graph()
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        for dep in sorted(graph.get(module, ())):
            if dep in path:
                cycles.append([*path[path.index(dep) :], dep])
            elif len(path) < len(graph):
                visit(dep, [*path, dep])

    for module in sorted(graph):
        visit(module, [module])
    assert cycles == []
