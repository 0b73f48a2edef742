"""What `pip install kubevirt-bridge-migration` gets, and what the images install.

The wheel is built from a copy of the repository's tracked files (so a stale build/ cannot leak
into it), offline, with the venv's setuptools. Its contents and its own metadata are checked:
the two services and their shared contract, nothing of the test infrastructure; every
third-party import of a shipped module declared where its image installs it from; one version.
The image's lock files (requirements/*.txt, scripts/lock.sh) must pin every requirement of
their pyproject.toml section, with hashes.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import PurePosixPath
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import sidecar
import webhook
from kubelab.tools import REPO_ROOT

DIST = "kubevirt-bridge-migration"
PYPROJECT: dict[str, Any] = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
VERSION: str = PYPROJECT["project"]["version"]
FIRST_PARTY = {"webhook", "sidecar", "bridge_migration_contract", "kubectl_bridge_migration"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for name in filter(None, tracked):
        if (REPO_ROOT / name).is_file():  # a file deleted but not yet committed is not copied
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, src / name)
    out = tmp / "dist"
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(src)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (built,) = out.glob("*.whl")
    return zipfile.ZipFile(built)


def metadata(wheel: zipfile.ZipFile) -> Any:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return Parser().parsestr(wheel.read(name).decode())


def test_the_wheel_ships_the_two_services_and_their_contract_only(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    top = {PurePosixPath(n).parts[0] for n in names}
    assert top == {
        "webhook",
        "sidecar",
        "bridge_migration_contract.py",
        "kubectl_bridge_migration",
        f"kubevirt_bridge_migration-{VERSION}.dist-info",
    }
    assert "sidecar/hookapi/hook_v1alpha3_pb2.py" in names  # the generated protocol modules
    assert "sidecar/hookapi/hook_v1alpha3_grpc.py" in names
    assert "webhook/demo.py" not in names  # the demo lives in kubelab/ (python -m kubelab.webhook_demo)
    # One console script, the kubectl plugin's: both services run as `python -m webhook` / `python -m sidecar`.
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    scripts = [line for line in wheel.read(entry_points).decode().splitlines() if "=" in line]
    assert scripts == ["kubectl-bridge_migration = kubectl_bridge_migration.cli:main"]


def _imports(source: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - FIRST_PARTY


def _section(module: str) -> str:
    """Which of the wheel's requirement sets a shipped module's imports must come from."""
    if module.startswith("webhook/") or module == "kubectl_bridge_migration/cleanup.py":
        # [project] dependencies: the webhook image's venv (the cleanup is the chart's pre-delete hook Job there)
        return ""
    if module.startswith("kubectl_bridge_migration/"):
        return "plugin"  # the kubectl plugin, on an admin's machine: the `plugin` extra
    if re.fullmatch(r"sidecar/hookapi/\w+_pb2_grpc\.py", module):
        return "hook-client"  # grpcio client stubs, for the tests and the lab
    if module.startswith("sidecar/"):
        return "sidecar"  # the sidecar image's venv has that extra and nothing else
    return "none"  # bridge_migration_contract: both images, so the standard library only


def test_every_third_party_import_of_a_shipped_module_is_declared_where_its_image_installs_it(
    wheel: zipfile.ZipFile,
) -> None:
    declared: dict[str, set[str]] = {"": set(), "sidecar": set(), "hook-client": set(), "plugin": set(), "none": set()}
    for line in metadata(wheel).get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker is None or "extra" not in str(req.marker):
            declared[""].add(canonicalize_name(req.name))
            continue
        for extra in ("sidecar", "hook-client", "plugin"):
            if req.marker.evaluate({"extra": extra}):
                declared[extra].add(canonicalize_name(req.name))
    distributions = importlib.metadata.packages_distributions()
    modules = [n for n in wheel.namelist() if n.endswith(".py")]
    assert len(modules) > 40
    missing = []
    for module in modules:
        for name in sorted(_imports(wheel.read(module).decode())):
            dists = {canonicalize_name(d) for d in distributions.get(name, [])}
            assert dists, f"{module}: `import {name}` is installed by no distribution in this venv"
            if not dists & declared[_section(module)]:
                missing.append(
                    f"{module}: {name} ({', '.join(sorted(dists))}) not in {_section(module) or 'dependencies'}"
                )
    assert not missing, "\n".join(missing)


def test_one_version_from_the_package_metadata(wheel: zipfile.ZipFile) -> None:
    assert metadata(wheel)["Version"] == VERSION
    assert importlib.metadata.version(DIST) == VERSION
    assert webhook.__version__ == sidecar.__version__ == VERSION
    chart = yaml.safe_load((REPO_ROOT / "charts" / "bridge-migration" / "Chart.yaml").read_text())
    assert chart["appVersion"] == VERSION  # checked, not derived: helm reads Chart.yaml alone
    hard_coded = [
        n
        for n in wheel.namelist()
        if n.endswith(".py") and re.search(rf"\b{re.escape(VERSION)}\b", wheel.read(n).decode())
    ]
    assert not hard_coded


def lock_pins(name: str) -> dict[str, tuple[Version, list[str]]]:
    """requirements/NAME.txt as {canonical name: (pinned version, hashes)}."""
    text = (REPO_ROOT / "requirements" / f"{name}.txt").read_text()
    assert "scripts/lock.sh" in text.splitlines()[1]  # written by the script, not by hand
    pins: dict[str, tuple[Version, list[str]]] = {}
    for entry in re.sub(r"\\\n", " ", text).splitlines():
        words = entry.split("#", 1)[0].split()
        if not words:
            continue
        req = Requirement(words[0])
        (spec,) = req.specifier
        assert spec.operator == "==", entry
        hashes = [w.removeprefix("--hash=sha256:") for w in words[1:] if w.startswith("--hash=sha256:")]
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), entry
        assert len(hashes) == len(words) - 1, entry  # nothing but hashes after the pin
        pins[canonicalize_name(req.name)] = (Version(spec.version), hashes)
    return pins


@pytest.mark.parametrize(
    ("lock", "requirements"),
    [
        ("webhook", PYPROJECT["project"]["dependencies"]),
        ("sidecar", PYPROJECT["project"]["optional-dependencies"]["sidecar"]),
        ("build", [*PYPROJECT["build-system"]["requires"], "pip"]),
    ],
)
def test_each_lock_pins_every_requirement_of_its_pyproject_section_with_hashes(
    lock: str, requirements: list[str]
) -> None:
    pins = lock_pins(lock)
    for line in requirements:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in requirements/{lock}.txt: run scripts/lock.sh"
        assert req.specifier.contains(pins[name][0]), (
            f"{name}=={pins[name][0]} does not satisfy {line}: scripts/lock.sh"
        )


def test_the_sidecar_lock_carries_none_of_the_webhooks_stack() -> None:
    sidecar_pins = lock_pins("sidecar")
    for line in PYPROJECT["project"]["dependencies"]:
        assert canonicalize_name(Requirement(line).name) not in sidecar_pins, line
