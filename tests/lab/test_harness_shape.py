"""The lab's shape, read from its source (no lab is started: the fast lane runs these).

The scenario runner is read most of the harness (issue 22, point 4): no function over 60 lines in
it, counted as tests/test_function_sizes.py counts (``end_lineno - lineno + 1`` of every ``def``,
nested ones included). A lab module uses another's public names only, and a lab test module takes
shared checks from tests/lab/assertions.py, never from another test module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.test_function_sizes import MAX_LINES, function_sizes

ROOT = Path(__file__).resolve().parent.parent.parent
RUNNER = ("lab/scenario.py", "lab/node_agent.py")


def _imports(source: str) -> list[tuple[str, str]]:
    """``(module, name)`` of every ``from module import name`` in ``source``."""
    return [
        (node.module or "", alias.name)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    ]


def _private_lab_imports(source: str) -> list[str]:
    return [f"from {module} import {name}" for module, name in _imports(source) if _is_private_lab(module, name)]


def _is_private_lab(module: str, name: str) -> bool:
    return (module == "lab" or module.startswith("lab.")) and name.startswith("_")


@pytest.mark.parametrize("module", RUNNER)
def test_no_function_of_the_scenario_runner_is_over_60_lines(module: str) -> None:
    too_long = [
        f"{module}:{line} {name} ({lines} lines)"
        for name, line, lines in function_sizes((ROOT / module).read_text())
        if lines > MAX_LINES
    ]
    assert too_long == []


def test_no_lab_module_imports_another_lab_modules_private_names() -> None:
    files = sorted((ROOT / "lab").glob("*.py"))
    assert len(files) > 10, "lab/ not found"
    private = [f"{f.relative_to(ROOT)}: {line}" for f in files for line in _private_lab_imports(f.read_text())]
    assert private == []


def test_lab_test_modules_share_checks_through_a_helper_module_not_each_other() -> None:
    files = sorted((ROOT / "tests/lab").glob("*.py"))
    assert (ROOT / "tests/lab/assertions.py") in files
    crossing = [
        f"{f.relative_to(ROOT)}: from {module} import {name}"
        for f in files
        for module, name in _imports(f.read_text())
        if module.startswith("tests.lab.test_") or (module.startswith("tests.lab") and name.startswith("_"))
    ]
    assert crossing == []


def test_the_import_scan_sees_a_planted_private_import() -> None:
    # The scan above would pass on a parser that saw nothing: it must see one planted in a module.
    source = (ROOT / "lab/node_agent.py").read_text()
    assert _private_lab_imports(source) == []
    planted = source + "\nfrom lab.scenario import Run, _to\n"
    assert _private_lab_imports(planted) == ["from lab.scenario import _to"]
