"""The image recipe. There is no container engine here, so the Dockerfile is linted (hadolint),
read (stages, packages, user), and its pip install steps are replayed into a fresh venv from a
build context cut by .dockerignore, after which both entry points must start. Not run: the apt
steps and the image build itself."""

from __future__ import annotations

import fnmatch
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from kubelab.tools import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
BASE = "python:3.11-slim-bookworm"


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


def test_two_stages_on_slim_python_with_libvirt_headers_only_at_build_time() -> None:
    _, stages = parse_dockerfile(DOCKERFILE.read_text())
    assert [(s.name, s.image) for s in stages] == [("build", BASE), ("runtime", BASE)]
    build, runtime = stages
    assert {"gcc", "libvirt-dev", "pkg-config"} <= build.apt_packages()
    assert runtime.apt_packages() == {"libvirt0"}
    assert ("COPY", "--from=build /opt/venv /opt/venv") in runtime.instructions


def test_the_image_runs_as_uid_107_not_root() -> None:
    _, stages = parse_dockerfile(DOCKERFILE.read_text())
    users = [arg for op, arg in stages[-1].instructions if op == "USER"]
    assert users == ["107:107"]
    assert any("useradd" in run and "--uid 107" in run for run in stages[-1].runs())


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


def test_replayed_pip_steps_install_both_entry_points(tmp_path: Path) -> None:
    _, stages = parse_dockerfile(DOCKERFILE.read_text())
    build = stages[0]
    context = tmp_path / "src"
    context.mkdir()
    _build_context(context)
    for op, arg in build.instructions:
        if op == "COPY":
            for source in arg.split()[:-1]:
                assert (context / source.rstrip("/")).exists(), f"COPY {source}: not in the build context"
    (pip_run,) = [run for run in build.runs() if "pip install" in run]
    venv = tmp_path / "venv"
    # The image's python is 3.11 like this machine's; the venv path is the only substitution.
    script = pip_run.replace("/opt/venv", str(venv)).replace("python -m venv", f"{sys.executable} -m venv")
    result = subprocess.run(["bash", "-ec", script], cwd=context, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    python = str(venv / "bin" / "python")
    outside = tmp_path / "elsewhere"  # not the repo: only the installed copy can be imported
    outside.mkdir()

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([python, *argv], cwd=outside, capture_output=True, text=True, check=False)

    webhook = run("-m", "webhook", "--help")
    assert webhook.returncode == 0, webhook.stderr
    assert "--sidecar-image" in webhook.stdout
    sidecar = run("-m", "sidecar", "serve", "--help")
    assert sidecar.returncode == 0, sidecar.stderr
    libvirt = run("-c", "import libvirt; print(libvirt.getVersion())")
    assert libvirt.returncode == 0, libvirt.stderr
