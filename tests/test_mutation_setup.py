"""mutmut's settings still fit the tree, so scripts/mutation.sh runs (docs/testing.md, "Mutation testing").

The mutation run takes minutes and is not part of CI; what rots is its setup when the tree moves
(a package the tests import missing from mutmut's copy, a renamed module or test file). mutmut
skips a missing also_copy path and mutates nothing for an only_mutate pattern that matches no
file, both without a word, and stops at test collection when a test imports something its
copy lacks. These checks are the cheap part of a run: setup.cfg's paths, and
`scripts/mutation.sh --collect-only`, which copies the tree as a run does and runs mutmut's own
first steps and test collection in it, mutating nothing.
"""

from __future__ import annotations

import ast
import configparser
import fnmatch
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def mutmut_setting(key: str) -> list[str]:
    """One of setup.cfg's [mutmut] lists, read as mutmut reads it (one item a line)."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return [line for line in parser.get("mutmut", key).splitlines() if line]


def mutated_modules() -> list[str]:
    return sorted(
        path.relative_to(ROOT).as_posix()
        for top in mutmut_setting("source_paths")
        for path in (ROOT / top).rglob("*.py")
        if any(fnmatch.fnmatch(path.relative_to(ROOT).as_posix(), p) for p in mutmut_setting("only_mutate"))
    )


def test_every_path_the_mutation_settings_name_exists() -> None:
    for key in ("source_paths", "also_copy"):
        for path in mutmut_setting(key):
            assert (ROOT / path).exists(), f"setup.cfg [mutmut] {key}: {path} does not exist"
    for path in mutmut_setting("pytest_add_cli_args_test_selection"):
        assert (ROOT / path.split("::")[0]).is_file(), f"setup.cfg [mutmut] test selection: {path} does not exist"
    for pattern in mutmut_setting("only_mutate"):
        assert any(fnmatch.fnmatch(m, pattern) for m in mutated_modules()), (
            f"setup.cfg [mutmut] only_mutate: {pattern} matches no file under source_paths"
        )


def test_every_mutated_module_is_imported_by_a_selected_test_file() -> None:
    # Otherwise its mutants all end as "no tests": a test file that moved and was not renamed here.
    imported: set[str] = set()
    for path in mutmut_setting("pytest_add_cli_args_test_selection"):
        tree = ast.parse((ROOT / path.split("::")[0]).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)  # from sidecar.core.plan import make_plan
                imported.update(f"{node.module}.{alias.name}" for alias in node.names)  # from sidecar.core import plan
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    for module in mutated_modules():
        name = module.removesuffix(".py").replace("/", ".")
        assert name in imported, f"{module} is mutated, but no test file in setup.cfg's selection imports {name}"


def test_the_mutants_are_judged_by_the_fast_lane() -> None:
    args = mutmut_setting("pytest_add_cli_args")
    marker = args[args.index("-m") + 1]
    fast_lane = re.search(r"pytest .* -m '([^']+)'", (ROOT / "scripts/check").read_text())
    assert fast_lane, "scripts/check runs no pytest -m '...'"
    assert marker == fast_lane.group(1)


def test_mutmut_collects_the_selected_tests_in_its_copy_of_the_tree(tmp_path: Path) -> None:
    venv_bin = Path(sys.executable).parent
    env = {**os.environ, "BM_MUTATION_WORKDIR": str(tmp_path), "PATH": f"{venv_bin}:{os.environ['PATH']}"}
    env["VIRTUAL_ENV"] = sys.prefix
    command = [str(ROOT / "scripts/mutation.sh"), "--collect-only"]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, f"mutation.sh --collect-only failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    collected = re.search(r"mutmut collects (\d+) tests", run.stdout)
    assert collected and int(collected.group(1)) > 0, run.stdout[-2000:]
