"""No product function is longer than a reader can hold in their head (issue 22, point 4).

Counted from the source's syntax tree: ``end_lineno - lineno + 1`` of every ``def`` and
``async def``, nested ones included (a closure counts on its own and inside its parent), from the
``def`` line to the last line of the body; decorators are not counted, docstrings and comments
inside are.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 60
# Product packages (directories) and modules (files), relative to the repository root.
PACKAGES = ("webhook", "sidecar", "bridge_migration_contract.py")
# Generated code is not written by a reader's hand: protoc's stubs are as long as protoc makes them.
GENERATED = ("sidecar/hookapi/",)


def function_sizes(source: str) -> list[tuple[str, int, int]]:
    """``(name, first line, lines)`` of every function in ``source``, nested ones included."""
    return [
        (node.name, node.lineno, (node.end_lineno or node.lineno) - node.lineno + 1)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]


def product_files(package: str) -> list[Path]:
    path = ROOT / package
    files = [path] if path.is_file() else sorted(path.rglob("*.py"))
    return [f for f in files if not f.relative_to(ROOT).as_posix().startswith(GENERATED)]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_product_function_is_over_60_lines(package: str) -> None:
    files = product_files(package)
    assert files, f"{package}: no Python files found"
    too_long = [
        f"{f.relative_to(ROOT)}:{line} {name} ({lines} lines)"
        for f in files
        for name, line, lines in function_sizes(f.read_text())
        if lines > MAX_LINES
    ]
    assert too_long == []


def test_the_count_covers_nested_and_async_functions_from_def_to_last_line() -> None:
    source = "def outer():\n    @decorator\n    async def inner():\n        pass\n\n    return inner\n"
    assert sorted(function_sizes(source)) == [("inner", 3, 2), ("outer", 1, 6)]
