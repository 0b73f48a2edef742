"""Every command README.md shows, checked here as far as it can run without root, network or cluster.

The commands are read from README.md itself: each line of a fenced ``sh`` block (a ``\\`` continues
it), each synopsis of an unlabelled usage block (one that starts with ``python -m``; an indented line
continues it), and each inline code span that starts like a command (``python -m``, ``kubectl``,
``helm``, ``scripts/``...). Each is checked by its kind:

- ``python -m webhook|sidecar ...``: every flag of the synopsis exists in that program's own parser
  (``build_parser``), takes a value exactly when the synopsis gives one, ``a|b|c`` lists every
  choice the parser admits, a concrete example value parses and is the flag's default (the
  synopses show defaults: ``[--port 8443]``), and the whole synopsis parses;
- other ``python -m MODULE``: the module exists;
- ``kubectl bridge-migration ...``: parses with the plugin's own parser;
- ``kubectl annotate|label``: each key is one of the contract's (``DEFAULT_KEYS``) or KubeVirt's
  allow annotation;
- ``./scripts/X`` and ``scripts/X``: the script exists and is executable;
- ``helm install|upgrade ... charts/bridge-migration``: ``helm template`` renders it with the same
  flags, each ``--set`` key is a value in values.yaml and its value lands in the manifests;
  ``oci://`` references name the chart and version of Chart.yaml, where scripts/release.sh pushes.

A command of a kind this file does not know fails, naming the line: teach it here, or add it to
``CANNOT_RUN_HERE`` with the reason.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import subprocess
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

import sidecar.options
import webhook.cli
from bridge_migration_contract import ALLOW_POD_BRIDGE_MIGRATION, DEFAULT_KEYS, FIXER_DELIVERIES, AnnotationKeys
from kubectl_bridge_migration import cli as plugin_cli
from kubelab.chart import CHART_DIR
from kubelab.tools import REPO_ROOT, find_tools
from sidecar.cli import build_parser as sidecar_parser
from webhook.cli import build_parser as webhook_parser

README = REPO_ROOT / "README.md"

# README commands that cannot run here, each with the reason. An entry no longer in the README fails
# (test_the_allowlist_is_current), so the list cannot outlive its commands.
CANNOT_RUN_HERE: dict[str, str] = {
    "helm test bridge-migration -n bridge-migration": "runs the chart's test pods in an installed release: a cluster",
    "kubectl apply": "names kubectl's verb in prose (`kubectl apply` time), no manifest: applying needs a cluster",
}

# Unlabelled fenced blocks that are output, not commands (by their first line). Any other unlabelled
# block that is not a `python -m` usage block fails: it must be taught here.
OUTPUT_BLOCKS = {
    "[    0.0 s] scenario same-mac": "what ./scripts/demo.sh prints",
    "NAMESPACE   NAME     KIND": "what `kubectl bridge-migration analyze` prints",
}
SHELL_LANGUAGES = ("sh", "shell", "bash", "console")
# An inline code span starting with one of these is a command.
INLINE_COMMAND_PREFIXES = ("python -m ", "kubectl ", "helm ", "./scripts/", "scripts/", "pip ", "ln ", "sudo ")
# Stand-ins for the README's placeholders.
PLACEHOLDERS = {"<registry>": "registry.example"}
PLACEHOLDER_VALUE = re.compile(r"^[A-Z][A-Z_/]*$")  # IMG, FILE, NS/NAME: a value to fill in


@dataclass(frozen=True)
class Command:
    text: str  # as the README writes it, whitespace collapsed, comment dropped
    lines: tuple[int, ...]  # README line numbers (1-based) where it appears


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _strip_comment(line: str) -> str:
    return re.sub(r"(^|\s)#.*$", "", line).rstrip()


def _fenced_blocks(lines: list[str]) -> list[tuple[str, int, list[str]]]:
    """(info string, line number of the block's first line, its lines) of each fenced block."""
    blocks: list[tuple[str, int, list[str]]] = []
    info: str | None = None
    start = 0
    body: list[str] = []
    for number, line in enumerate(lines, start=1):
        if line.startswith("```"):
            if info is None:
                info, start, body = line[3:].strip(), number + 1, []
            else:
                blocks.append((info, start, body))
                info = None
        elif info is not None:
            body.append(line)
    assert info is None, "README.md: an unclosed fenced block"
    return blocks


def _shell_commands(start: int, body: list[str]) -> list[tuple[int, str]]:
    commands: list[tuple[int, str]] = []
    pending: list[str] = []
    first = start
    for number, raw in enumerate(body, start=start):
        line = _strip_comment(raw)
        if not pending:
            first = number
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        text = _collapse(" ".join([*pending, line]))
        pending = []
        if text:
            commands.append((first, text))
    assert not pending, f"README.md:{first}: a `\\` continues into the end of the block"
    return commands


def _usage_commands(start: int, body: list[str]) -> list[tuple[int, str]]:
    """Synopses: a line starting at column 0 begins one, an indented line continues it."""
    commands: list[list[Any]] = []
    for number, raw in enumerate(body, start=start):
        line = _strip_comment(raw)
        if not line.strip():
            continue
        if line[0].isspace():
            assert commands, f"README.md:{number}: a usage block starts with an indented line"
            commands[-1][1] += " " + line
        else:
            commands.append([number, line])
    return [(number, _collapse(text)) for number, text in commands]


def _inline_commands(text: str) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for match in re.finditer(r"(?<!`)`([^`]+)`(?!`)", text):
        span = _collapse(match.group(1))
        if "\n\n" not in match.group(1) and span.startswith(INLINE_COMMAND_PREFIXES):
            found.append((text.count("\n", 0, match.start()) + 1, span))
    return found


def readme_commands() -> list[Command]:
    lines = README.read_text().splitlines()
    found: list[tuple[int, str]] = []
    prose = list(lines)
    for info, start, body in _fenced_blocks(lines):
        for i in range(start - 2, start + len(body)):
            prose[i] = ""  # keep line numbers, drop the block from the prose
        if info in SHELL_LANGUAGES:
            found += _shell_commands(start, body)
        elif info == "" and body and body[0].startswith("python -m "):
            found += _usage_commands(start, body)
        elif info == "":
            known = [prefix for prefix in OUTPUT_BLOCKS if body and body[0].startswith(prefix)]
            assert known, (
                f"README.md:{start}: an unlabelled block that is neither a `python -m` usage block nor known "
                "output (OUTPUT_BLOCKS): teach tests/test_readme_commands.py what it is"
            )
    found += _inline_commands("\n".join(prose))
    by_text: dict[str, list[int]] = {}
    for number, text in sorted(found):
        by_text.setdefault(text, []).append(number)
    return [Command(text, tuple(numbers)) for text, numbers in by_text.items()]


COMMANDS = readme_commands()


def _argv(command: Command) -> list[str]:
    text = command.text
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    leftover = re.findall(r"<[^>]*>", text)
    assert not leftover, f"{_where(command)}: unknown placeholder {leftover}: add it to PLACEHOLDERS"
    return shlex.split(text)


def _where(command: Command) -> str:
    return "README.md:" + ",".join(map(str, command.lines)) + f" `{command.text}`"


# --- python -m webhook|sidecar: the synopsis against the program's parser -------------------------


def _subparser(parser: argparse.ArgumentParser, name: str, where: str) -> argparse.ArgumentParser:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert name in sub.choices, f"{where}: no subcommand {name!r}: the parser has {sorted(sub.choices)}"
    found: argparse.ArgumentParser = sub.choices[name]
    return found


def _parse(parser: argparse.ArgumentParser, argv: list[str], where: str) -> argparse.Namespace:
    try:
        return parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: the parser refuses {argv}")


def _option_groups(text: str) -> tuple[list[str], list[list[str]]]:
    """The positional words and the option groups (``--flag [value]``) of a synopsis; ``[...]``
    marks a group optional, which changes nothing here."""
    words = re.sub(r"[\[\]]", " ", text).split()
    positional: list[str] = []
    groups: list[list[str]] = []
    for word in words:
        if word.startswith("-"):
            groups.append([word])
        elif groups:
            groups[-1].append(word)
        else:
            positional.append(word)
    return positional, groups


def _check_group(
    root: argparse.ArgumentParser,
    parser: argparse.ArgumentParser,
    prefix: list[str],
    group: list[str],
    where: str,
    *,
    optional: bool,
) -> list[str]:
    """Checks one ``--flag [value]`` group of ``parser`` (``root`` or its subcommand ``prefix``);
    returns what the whole synopsis parses with."""
    flag, values = group[0], group[1:]
    actions = {opt: a for a in parser._actions for opt in a.option_strings}
    assert flag in actions, f"{where}: {flag} is not a flag of `{parser.prog}` (it has {sorted(actions)})"
    action = actions[flag]
    assert len(values) <= 1, f"{where}: {flag} is followed by {values}"
    if not values:
        assert action.nargs == 0, f"{where}: {flag} takes a value, the synopsis gives none"
        return [flag]
    assert action.nargs != 0, f"{where}: {flag} takes no value, the synopsis gives {values[0]!r}"
    value = values[0]
    if "|" in value:
        alternatives = value.split("|")
        admitted = action.choices if action.choices is not None else ADMITTED.get((root.prog, flag))
        assert admitted is not None, f"{where}: {flag} {value}: what does it admit? teach ADMITTED"
        assert set(alternatives) == set(admitted), f"{where}: {flag} {value}: the program admits {sorted(admitted)}"
        for alternative in alternatives:
            _parse(root, [*prefix, flag, alternative], where)
        return [flag, alternatives[0]]
    if PLACEHOLDER_VALUE.match(value):
        return [flag, value]
    parsed = _parse(root, [*prefix, flag, value], where)
    if optional:
        assert getattr(parsed, action.dest) == action.default, (
            f"{where}: {flag} {value} is not the default ({action.default!r}), as the synopsis shows it"
        )
    return [flag, value]


# Flags whose values are checked after parsing (no argparse choices): what the program admits.
ADMITTED: dict[tuple[str, str], tuple[str, ...]] = {
    ("python -m sidecar", "--delivery"): FIXER_DELIVERIES,  # sidecar/pod/settings.py
}

PYTHON_PROGRAMS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "webhook": webhook_parser,
    "sidecar": sidecar_parser,
}


def check_python_program(command: Command, argv: list[str]) -> None:
    where = _where(command)
    module = argv[2]
    text = command.text.split(None, 3)[3] if len(argv) > 3 else ""
    if module not in PYTHON_PROGRAMS:
        assert importlib.util.find_spec(module) is not None, f"{where}: no module {module}"
        return
    root = PYTHON_PROGRAMS[module]()
    positional, groups = _option_groups(text)
    parser, prefix = root, []
    if any(isinstance(a, argparse._SubParsersAction) for a in root._actions):
        assert positional, f"{where}: `python -m {module}` needs a subcommand"
        parser, prefix = _subparser(root, positional[0], where), [positional[0]]
        positional = positional[1:]
    assert not positional, f"{where}: words the parser takes no positional for: {positional}"
    required = set(map(tuple, _option_groups(re.sub(r"\[[^\]]*\]", " ", text))[1]))
    whole = list(prefix)
    for group in groups:
        whole += _check_group(root, parser, prefix, group, where, optional=tuple(group) not in required)
    _parse(root, whole, where)


# --- kubectl ------------------------------------------------------------------------------------


def contract_keys() -> set[str]:
    names = [n for n, v in vars(AnnotationKeys).items() if isinstance(v, property)]
    return {getattr(DEFAULT_KEYS, n) for n in names} | {ALLOW_POD_BRIDGE_MIGRATION}


def check_kubectl(command: Command, argv: list[str]) -> None:
    where = _where(command)
    verb = argv[1]
    if verb == "bridge-migration" and len(argv) == 2:
        # The plugin named in prose: kubectl finds it as kubectl-bridge_migration on PATH.
        launcher = REPO_ROOT / "bin" / "kubectl-bridge_migration"
        assert launcher.is_file() and os.access(launcher, os.X_OK), f"{where}: {launcher} is not executable"
        scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
        assert scripts.get("kubectl-bridge_migration") == "kubectl_bridge_migration.cli:main", where
    elif verb == "bridge-migration":
        assert argv[2] != "cleanup", f"{where}: cleanup has its own parser: teach this file"
        _parse(plugin_cli._parser(), argv[2:], where)
    elif verb in ("annotate", "label"):
        # KEY=VALUE sets, KEY- removes; the other words are the resource.
        words = [w for w in argv[2:] if not w.startswith("-")]
        keys = [w.split("=", 1)[0] for w in words if "=" in w] + [w[:-1] for w in words if w.endswith("-")]
        assert keys, f"{where}: names no key"
        for key in keys:
            assert key in contract_keys(), f"{where}: {key} is not a contract key ({sorted(contract_keys())})"
    else:
        pytest.fail(f"{where}: kubectl {verb}: a kind of command this file does not know; teach it or allowlist it")


# --- scripts ------------------------------------------------------------------------------------


def check_script(command: Command, argv: list[str]) -> None:
    script = REPO_ROOT / argv[0].removeprefix("./")
    assert script.is_file(), f"{_where(command)}: no {script}"
    assert os.access(script, os.X_OK), f"{_where(command)}: {script} is not executable"


# --- helm -----------------------------------------------------------------------------------------

HELM_VALUE_FLAGS = ("-n", "--namespace", "--set", "--set-string", "--version", "-f", "--values")
HELM_BOOL_FLAGS = ("--create-namespace", "--install", "--wait", "--atomic")


def _helm_words(argv: list[str], where: str) -> tuple[list[str], dict[str, list[str]]]:
    positional: list[str] = []
    flags: dict[str, list[str]] = {}
    words = iter(argv[2:])
    for word in words:
        if word in HELM_VALUE_FLAGS:
            flags.setdefault(word, []).append(next(words))
        elif word in HELM_BOOL_FLAGS:
            flags.setdefault(word, [])
        elif word.startswith("-"):
            pytest.fail(f"{where}: helm flag {word}: teach this file")
        else:
            positional.append(word)
    return positional, flags


def _values_has(values: Any, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(values, dict) or part not in values:
            return False
        values = values[part]
    return True


def check_helm(command: Command, argv: list[str]) -> None:
    where = _where(command)
    if argv[1] not in ("install", "upgrade"):
        pytest.fail(f"{where}: helm {argv[1]}: a kind of command this file does not know; teach it or allowlist it")
    positional, flags = _helm_words(argv, where)
    assert len(positional) == 2, f"{where}: expected a release and a chart, got {positional}"
    chart = positional[1]
    meta = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    if chart.startswith("oci://"):
        assert chart.rsplit("/", 1)[1] == meta["name"], f"{where}: the chart is {meta['name']}"
        assert flags.get("--version") == [meta["version"]], f"{where}: Chart.yaml's version is {meta['version']}"
        pushed_to = chart.rsplit("/", 1)[0].replace(PLACEHOLDERS["<registry>"], "$registry")
        assert f'"{pushed_to}"' in (REPO_ROOT / "scripts" / "release.sh").read_text(), (
            f"{where}: scripts/release.sh does not push the chart to {pushed_to}"
        )
        return
    assert (REPO_ROOT / chart).resolve() == CHART_DIR, f"{where}: {chart} is not the chart"
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    sets = [s.split("=", 1) for s in flags.get("--set", [])]
    for key, _ in sets:
        assert _values_has(values, key), f"{where}: --set {key}: no such value in values.yaml"
    helm = find_tools(need=("helm",)).helm  # as tests/chart/conftest.py: no skip without it
    result = subprocess.run(
        [str(helm), "template", *argv[2:]], cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, f"{where}: helm template fails:\n{result.stderr}"
    for key, value in sets:
        assert value in result.stdout, f"{where}: --set {key}={value} is nowhere in the rendered manifests"


# --- the rest -------------------------------------------------------------------------------------


def check_pip(command: Command, argv: list[str]) -> None:
    match = re.fullmatch(r"\.\[(\w+)\]", argv[2]) if argv[1:2] == ["install"] and len(argv) == 3 else None
    assert match, f"{_where(command)}: a pip command this file does not know; teach it"
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert match.group(1) in extras, f"{_where(command)}: no extra {match.group(1)} in pyproject.toml"


def check_ln(command: Command, argv: list[str]) -> None:
    assert argv[1] == "-s" and len(argv) == 4, f"{_where(command)}: an ln this file does not know; teach it"
    source = Path(argv[2].replace("$PWD", str(REPO_ROOT)))
    assert source.is_file() and os.access(source, os.X_OK), f"{_where(command)}: {source} is not executable"


def check(command: Command) -> None:
    argv = _argv(command)
    if argv[:2] == ["python", "-m"] and len(argv) > 2:
        check_python_program(command, argv)
    elif argv[0] == "kubectl" and len(argv) > 1:
        check_kubectl(command, argv)
    elif argv[0] == "helm" and len(argv) > 1:
        check_helm(command, argv)
    elif re.match(r"(\./)?scripts/", argv[0]):
        check_script(command, argv)
    elif argv[0] == "pip":
        check_pip(command, argv)
    elif argv[0] == "ln":
        check_ln(command, argv)
    else:
        pytest.fail(f"{_where(command)}: a kind of command this file does not know; teach it or allowlist it")


@pytest.fixture
def no_program_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parsers' defaults come from BM_WEBHOOK_* / BM_SIDECAR_* when set: not here."""
    for name in list(os.environ):
        if name.startswith((webhook.cli.ENV_PREFIX, sidecar.options.ENV_PREFIX)):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("no_program_environment")
@pytest.mark.parametrize("command", [pytest.param(c, id=c.text) for c in COMMANDS if c.text not in CANNOT_RUN_HERE])
def test_readme_command(command: Command) -> None:
    check(command)


def test_the_allowlist_is_current() -> None:
    texts = {c.text for c in COMMANDS}
    assert set(CANNOT_RUN_HERE) <= texts, f"not in README.md any more: {set(CANNOT_RUN_HERE) - texts}"


def test_every_kind_of_readme_command_is_found() -> None:
    # The extraction itself: if it broke, the parametrized test would check nothing and pass.
    starts = {
        c.text.split()[0] + (" " + c.text.split()[1] if c.text.startswith(("python", "kubectl", "helm")) else "")
        for c in COMMANDS
    }
    assert {
        "python -m",
        "kubectl bridge-migration",
        "kubectl annotate",
        "helm install",
        "helm test",
        "./scripts/demo.sh",
        "scripts/release.sh",
    } <= starts
    assert len(COMMANDS) >= 20
