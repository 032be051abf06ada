"""The test suite's shape: helpers have one home, so a newcomer can extend any test file alone.

A test module takes what it shares from ``tests/helpers/`` or a conftest fixture, never from
another test module (or from conftest by import): a helper imported from ``test_resume`` breaks
the day that file is split, and runs its tests' module-level code in another file's collection.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _borrowed(module: Path) -> list[str]:
    """The test modules (and conftest) that ``module`` imports from."""
    found = []
    for node in ast.walk(ast.parse(module.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if (
                parts[0] == "tests"
                and len(parts) > 1
                and (parts[1].startswith("test_") or parts[1] == "conftest")
            ):
                found.append(name)
    return found


def test_no_test_module_imports_another() -> None:
    borrowed = {
        path.name: _borrowed(path)
        for path in [*TESTS.glob("test_*.py"), *TESTS.glob("helpers/*.py")]
    }
    assert {name: mods for name, mods in borrowed.items() if mods} == {}


def test_the_check_sees_a_borrowed_helper(tmp_path: Path) -> None:
    module = tmp_path / "test_x.py"
    module.write_text("from tests.test_resume import make_job\nimport tests.conftest\n")
    assert _borrowed(module) == [
        "tests.test_resume",
        "tests.test_resume.make_job",
        "tests.conftest",
    ]


def test_the_emulator_fixture_has_one_factory() -> None:
    # a test file may configure its own emulator, but through conftest's factory, not its own
    # EmulatorThread fixture
    for path in TESTS.glob("test_*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef) or not node.decorator_list:
                continue
            source = ast.get_source_segment(path.read_text(), node) or ""
            fixture = any("fixture" in ast.unparse(d) for d in node.decorator_list)
            assert not (fixture and "EmulatorThread(" in source), f"{path.name}: {node.name}"
