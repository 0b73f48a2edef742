"""Imports point one way: the contracts of `.importlinter`, checked by import-linter's `lint-imports`.

The contracts cover both services (the sidecar's pure core and layers, the webhook's admission
logic, neither service importing the other or the test harnesses). The planted imports show that
each kind of contract catches what it is there for, in a copy of the tree.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / ".importlinter"
PACKAGES = ("sidecar", "webhook", "lab", "kubelab")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    # The venv's own script: a missing import-linter is a failure, not a skip.
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(exe), "--no-cache", str(root / ".importlinter")],
        cwd=root,  # lint-imports puts its working directory first on sys.path: this tree is analysed
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def contract_names() -> list[str]:
    parser = configparser.ConfigParser()
    parser.read(CONFIG)
    return [parser[s]["name"] for s in parser.sections() if s.startswith("importlinter:contract:")]


def test_every_import_contract_is_kept() -> None:
    names = contract_names()
    assert len(names) >= 6
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in names:
        assert f"{name} KEPT" in result.stdout
    assert f"Contracts: {len(names)} kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    ("module", "planted", "broken"),
    [
        # What the contracts replaced: the event verdicts reached libvirt through the watcher.
        (
            "sidecar/core/verdicts.py",
            "from sidecar.fixer.watcher import LibvirtWatcher",
            "The sidecar's pure core imports no I/O",
        ),
        ("sidecar/core/plan.py", "import libvirt", "The sidecar's pure core imports no I/O"),
        ("sidecar/core/models.py", "from sidecar.fixer import engine", "The sidecar's layers"),
        ("sidecar/pod/rest.py", "from sidecar.node import agent", "The sidecar's layers"),
        ("sidecar/fixer/executor.py", "from sidecar.fixer.engine import Fixer", "The fixer's layers"),
        ("sidecar/pod/settings.py", "from sidecar.pod import rest", "The per-VM program's layers"),
        ("sidecar/node/target.py", "from sidecar.node import fixup", "The node agent's layers"),
        ("sidecar/node/fixup.py", "from sidecar.fixer.executor import Executor", "Only the fixer's builder"),
        ("sidecar/fixer/engine.py", "import libvirt", "Only the watcher and the wiring import libvirt"),
        ("sidecar/pod/rest.py", "import grpclib", "Only the two hook servers import gRPC"),
        ("webhook/vmi_mutation.py", "from webhook.orchestration import Runtime", "The webhook's layers"),
        ("webhook/macs.py", "import fastapi", "The webhook's admission logic imports no web framework"),
        ("sidecar/core/models.py", "import webhook.app", "The webhook and the sidecar never import each other"),
        ("webhook/app.py", "import kubelab.ports", "Neither service imports lab or kubelab"),
    ],
)
def test_a_planted_import_breaks_its_contract(tmp_path: Path, module: str, planted: str, broken: str) -> None:
    shutil.copy(CONFIG, tmp_path / ".importlinter")
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{planted}  # planted by the test\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    broken_lines = [line for line in result.stdout.splitlines() if " BROKEN" in line]
    assert len(broken_lines) >= 1
    assert any(line.startswith(broken) for line in broken_lines), broken_lines
    assert module.removesuffix(".py").replace("/", ".") in result.stdout  # the report names the culprit
