"""The image recipe, read: hadolint, the base pinned by digest, the stages, packages, labels and user,
and a replay of its pip steps (from the hash-pinned locks) into fresh venvs from a build context cut
by .dockerignore, after which each image's entry point must start. The images themselves are built
and run by tests/image."""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kubelab.tools import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
BASE_TAG = "python:3.11-slim-bookworm"


@dataclass
class Stage:
    image: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def runs(self) -> list[str]:
        return [arg for op, arg in self.instructions if op == "RUN"]

    def apt_packages(self) -> set[str]:
        packages: set[str] = set()
        for run in self.runs():
            for step in run.split("&&"):
                words = shlex.split(step)
                if words[:2] == ["apt-get", "install"]:
                    packages |= {w for w in words[2:] if not w.startswith("-")}
        return packages


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs and stages; continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        op, _, rest = line.partition(" ")
        op = op.upper()
        if op == "ARG" and not stages:
            key, _, value = rest.partition("=")
            args[key] = value
        elif op == "FROM":
            words = rest.split()
            image = words[0]
            for key, value in args.items():
                image = image.replace("${" + key + "}", value)
            name = words[2] if len(words) > 2 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(image=image, name=name))
        else:
            stages[-1].instructions.append((op, rest))
    return args, stages


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_base_is_the_official_slim_python_pinned_by_digest() -> None:
    args, stages = parse_dockerfile(DOCKERFILE.read_text())
    assert re.fullmatch(re.escape(BASE_TAG) + r"@sha256:[0-9a-f]{64}", args["PYTHON_IMAGE"]), args["PYTHON_IMAGE"]
    assert all(s.image in (args["PYTHON_IMAGE"], "user") for s in stages)


def test_a_webhook_and_a_sidecar_image_on_slim_python_with_libvirt_headers_only_at_build_time() -> None:
    args, stages = parse_dockerfile(DOCKERFILE.read_text())
    base = args["PYTHON_IMAGE"]
    assert [(s.name, s.image) for s in stages] == [
        ("build", base),
        ("user", base),
        ("sidecar", "user"),
        ("webhook", "user"),  # last: a plain `docker build .` builds the webhook
    ]
    build, user, sidecar, webhook = stages
    assert {"gcc", "libvirt-dev", "pkg-config"} <= build.apt_packages()
    assert sidecar.apt_packages() == {"libvirt0"}
    assert user.apt_packages() == webhook.apt_packages() == set()
    assert ("COPY", "--from=build /opt/venv-sidecar /opt/venv") in sidecar.instructions
    assert ("COPY", "--from=build /opt/venv-webhook /opt/venv") in webhook.instructions


def labels(stages: list[Stage], name: str) -> dict[str, str]:
    """The LABELs a stage ends up with, its parents' included (values as written, ARGs unexpanded)."""
    by_name = {s.name: s for s in stages}
    stage = by_name[name]
    found = labels(stages, stage.image) if stage.image in by_name else {}
    for op, arg in stage.instructions:
        if op == "LABEL":
            found |= dict(word.split("=", 1) for word in shlex.split(arg))
    return found


def test_both_images_carry_the_oci_labels_version_and_revision_from_build_args() -> None:
    _, stages = parse_dockerfile(DOCKERFILE.read_text())
    for name, title in (("webhook", "bridge-migration"), ("sidecar", "bridge-migration-sidecar")):
        found = labels(stages, name)
        assert found["org.opencontainers.image.title"] == title
        assert name in found["org.opencontainers.image.description"]
        assert found["org.opencontainers.image.source"] == "${SOURCE}"
        assert found["org.opencontainers.image.licenses"] == "Apache-2.0"  # pyproject's license
        assert found["org.opencontainers.image.version"] == "${VERSION}"
        assert found["org.opencontainers.image.revision"] == "${REVISION}"
        args = [arg for op, arg in stages[[s.name for s in stages].index(name)].instructions if op == "ARG"]
        assert {"VERSION", "REVISION"} <= set(args), name
        # version and revision change at every commit: nothing may come after them but metadata
        ops = [op for op, _ in stages[[s.name for s in stages].index(name)].instructions]
        assert set(ops[ops.index("ARG") :]) <= {"ARG", "LABEL"}, ops


def test_both_images_run_as_uid_107_not_root() -> None:
    _, stages = parse_dockerfile(DOCKERFILE.read_text())
    for stage in stages[2:]:
        assert [arg for op, arg in stage.instructions if op == "USER"] == ["107:107"], stage.name
    assert any("useradd" in run and "--uid 107" in run for run in stages[1].runs())


def _build_context(dest: Path) -> None:
    """Copy the repo as `docker build` would see it: .dockerignore's '*' then its '!' exceptions."""
    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "the context is an allow-list"
    for pattern in patterns[1:]:
        if not pattern.startswith("!"):
            continue
        src = REPO_ROOT / pattern[1:].rstrip("/")
        if src.is_dir():
            shutil.copytree(
                src,
                dest / src.name,
                ignore=lambda _d, names: [n for n in names if fnmatch.fnmatch(n, "__pycache__") or n.endswith(".pyc")],
            )
        else:
            shutil.copy2(src, dest / src.name)


@pytest.mark.build
def test_replayed_pip_steps_give_each_image_its_entry_point(tmp_path: Path) -> None:
    _, stages = parse_dockerfile(DOCKERFILE.read_text())
    build = stages[0]
    context = tmp_path / "src"
    context.mkdir()
    _build_context(context)
    for op, arg in build.instructions:
        if op == "COPY":
            for source in arg.split()[:-1]:
                assert (context / source.rstrip("/")).exists(), f"COPY {source}: not in the build context"
    # The build's environment: its ARG PIP_CERT, not this machine's other pip settings (a local
    # wheel directory would hide a package the locks lack).
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    if "PIP_CERT" in os.environ:
        env["PIP_CERT"] = os.environ["PIP_CERT"]
    venvs = {}
    for name in ("webhook", "sidecar"):
        pip_runs = [run for run in build.runs() if f"/opt/venv-{name}/" in run]
        assert len(pip_runs) == 2, pip_runs  # the locked dependencies, then the project
        assert all("--require-hashes" in step for step in pip_runs[0].split("&&")[1:]), pip_runs[0]
        venv = tmp_path / f"venv-{name}"
        for pip_run in pip_runs:
            # The image's python is 3.11 like this machine's; the venv path is the only substitution.
            script = pip_run.replace(f"/opt/venv-{name}", str(venv)).replace(
                "python -m venv", f"{sys.executable} -m venv"
            )
            result = subprocess.run(
                ["bash", "-ec", script], cwd=context, env=env, capture_output=True, text=True, check=False
            )
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        venvs[name] = str(venv / "bin" / "python")
    outside = tmp_path / "elsewhere"  # not the repo: only the installed copy can be imported
    outside.mkdir()

    def run(name: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([venvs[name], *argv], cwd=outside, capture_output=True, text=True, check=False)

    webhook = run("webhook", "-m", "webhook", "--help")
    assert webhook.returncode == 0, webhook.stderr
    assert "--sidecar-image" in webhook.stdout
    assert run("webhook", "-c", "import libvirt").returncode != 0  # no libvirt in the webhook image
    # The chart's pre-delete hook Job (templates/cleanup-hook.yaml) runs the uninstall cleanup in the webhook image.
    cleanup = run("webhook", "-m", "kubectl_bridge_migration.cleanup", "--help")
    assert cleanup.returncode == 0, cleanup.stderr
    assert "--keep-allow" in cleanup.stdout
    sidecar = run("sidecar", "-m", "sidecar", "serve", "--help")
    assert sidecar.returncode == 0, sidecar.stderr
    libvirt = run("sidecar", "-c", "import libvirt; print(libvirt.getVersion())")
    assert libvirt.returncode == 0, libvirt.stderr
    for package in ("fastapi", "uvicorn", "cryptography"):  # none of the webhook's stack in the sidecar image
        assert run("sidecar", "-c", f"import {package}").returncode != 0, package
    for name, python in venvs.items():
        assert not (Path(python).parent / "pip").exists(), f"pip left in the {name} venv"
