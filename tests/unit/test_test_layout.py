"""The tests' own layout: every test module in a layer folder, helpers only in ``tests/support``.

A test module never imports another test module (nor ``conftest``): what tests share lives in
``tests/support``, and fixtures come from ``conftest.py`` through pytest.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
LAYERS = ("unit", "repository", "api", "process")
SHARED = "tests.support"


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in the file (relative imports as ``.name``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            found.add(module)
            found.update(f"{module}.{alias.name}" if node.module else f"{module}{alias.name}" for alias in node.names)
    return found


def forbidden(module: str) -> bool:
    """An import of the tests' own modules from outside ``tests.support``, or any relative import."""
    if module.startswith("."):
        return True
    return (module == "tests" or module.startswith("tests.")) and not (
        module == SHARED or module.startswith(SHARED + ".")
    )


def test_every_test_module_lives_in_a_layer_folder() -> None:
    misplaced = [
        str(path.relative_to(TESTS))
        for path in TESTS.rglob("test_*.py")
        if path.relative_to(TESTS).parts[0] not in LAYERS or len(path.relative_to(TESTS).parts) != 2
    ]
    assert misplaced == []
    assert sorted(p.name for p in TESTS.glob("*.py")) == ["__init__.py", "conftest.py"]  # nothing else flat


def test_no_module_imports_a_test_module_or_conftest() -> None:
    imports = {
        str(path.relative_to(TESTS)): sorted(m for m in imported_modules(path) if forbidden(m))
        for path in TESTS.rglob("*.py")
    }
    assert {path: found for path, found in imports.items() if found} == {}


def test_the_check_sees_a_cross_import() -> None:
    assert forbidden("tests.api.test_api_tasks")
    assert forbidden("tests.conftest")
    assert forbidden(".test_cli")
    assert not forbidden("tests.support.servers")
    assert not forbidden("app.asgi")
