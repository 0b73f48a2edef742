"""Every shell script of the project is shellcheck-clean.

The scripts are found by their shebang, not their name: scripts/check and the lab guests' init
scripts have no ``.sh``. A missing shellcheck is a failure (scripts/install.sh installs it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHELL_DIRS = ("scripts", "lab", ".ci")
_SHEBANG = re.compile(rb"^#!\s*(/usr/bin/env\s+)?(/bin/|/usr/bin/)?(ba|da)?sh\b")


def shell_scripts() -> list[Path]:
    found = []
    for top in SHELL_DIRS:
        for path in sorted((ROOT / top).rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts:
                continue
            with path.open("rb") as f:
                if _SHEBANG.match(f.readline()):
                    found.append(path)
    return found


def test_the_scripts_are_found_by_shebang_with_or_without_an_extension() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in shell_scripts()}
    for expected in ("scripts/test.sh", "scripts/check", "lab/guest/init", "lab/guest-debian/lab-observer", ".ci/run"):
        assert expected in names
    assert not any(name.endswith(".py") for name in names)


def test_every_shell_script_is_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed: run scripts/install.sh"
    scripts = [str(p.relative_to(ROOT)) for p in shell_scripts()]
    # -x follows `source`d files; the shebang picks the dialect (sh for the busybox guests).
    result = subprocess.run(
        [shellcheck, "-x", "-f", "gcc", *scripts], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"shellcheck findings:\n{result.stdout}{result.stderr}"
