"""Imports point inward: the pure core never reaches for libvirt, gRPC, HTTP or netlink."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SIDECAR = Path(__file__).resolve().parents[2] / "sidecar"
PURE = ["domxml", "plan", "podinfo", "errors", "vmistore"]
SHELL = [
    "executor", "engine", "watcher", "triggers", "rest", "service", "server", "hooks", "cli", "podlinks",
    "nodeagent", "nodehook",
]  # fmt: skip
HEAVY = [
    "libvirt",
    "grpc",
    "grpclib",
    "fastapi",
    "uvicorn",
    "pyroute2",
    "prometheus_client",
    "httpx",
    "http.server",
    "msgspec",
]


def imported(module: str) -> set[str]:
    tree = ast.parse((SIDECAR / f"{module}.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", PURE)
def test_the_pure_core_imports_no_io_library_and_no_shell_module(module: str) -> None:
    names = imported(module)
    for heavy in HEAVY:
        assert not any(n == heavy or n.startswith(heavy + ".") for n in names), (module, heavy)
    for shell in SHELL:
        assert f"sidecar.{shell}" not in names, (module, shell)


def test_the_executor_talks_to_a_domain_protocol_not_to_the_libvirt_module() -> None:
    assert "libvirt" not in imported("executor")


def test_grpc_is_only_imported_by_the_two_hook_servers() -> None:
    # The sidecar's hook server and the node agent's NodeHookService; the node agent's logic
    # (nodeagent.py) and everything else stay free of it.
    users = sorted(p.stem for p in SIDECAR.glob("*.py") if any(n.startswith("grpc") for n in imported(p.stem)))
    assert users == ["hooks", "nodehook"]
