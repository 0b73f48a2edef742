"""`status` and `fixup`: which fixer serves a VMI, and the `kubectl exec` line (target.py, cli.py)."""

from __future__ import annotations

from typing import Any

import pytest

from bridge_migration_contract import ALLOW_POD_BRIDGE_MIGRATION, DEFAULT_KEYS
from kubectl_bridge_migration import cli, client
from kubectl_bridge_migration.target import ExecTarget, NoTarget, exec_argv, find_fixer
from tests.plugin.test_analyze import HOOK, INJECT, NODE, agent, launcher, vmi


def test_inject_execs_into_the_bridge_migration_container() -> None:
    found = find_fixer(vmi("a", INJECT), [launcher("uid-1", init=[{"name": "bridge-migration"}])], [])
    assert found == ExecTarget("apps", "virt-launcher-uid-1", "bridge-migration", "inject")
    argv = exec_argv("kubectl", ["--context=prod"], found, ["fixup", "--dry-run"])
    assert argv == [
        "kubectl", "--context=prod", "exec", "-n", "apps", "virt-launcher-uid-1", "-c", "bridge-migration",
        "--", "python", "-m", "sidecar", "fixup", "--dry-run",
    ]  # fmt: skip


def test_hook_execs_into_the_hook_sidecar_running_the_fixer() -> None:
    theirs = {"name": "hook-sidecar-0", "command": ["/usr/bin/their-hook"]}
    ours = {"name": "hook-sidecar-1", "command": ["python", "-m", "sidecar", "serve"]}
    found = find_fixer(vmi("a", HOOK), [launcher("uid-1", containers=[theirs, ours])], [])
    assert isinstance(found, ExecTarget) and found.container == "hook-sidecar-1" and found.delivery == "hook"


def test_node_delivery_has_no_per_vmi_command_and_says_so() -> None:
    found = find_fixer(vmi("a", NODE), [launcher("uid-1")], [agent("node-a")])
    assert isinstance(found, NoTarget) and found.code == 2
    assert "no `fixup --vmi NS/NAME`" in found.why and "agent-node-a" in found.why


def test_no_pod_or_no_container_of_ours_is_no_target() -> None:
    assert "no launcher pod" in find_fixer(vmi("a", INJECT), [], []).why  # type: ignore[union-attr]
    none = find_fixer(vmi("a", {ALLOW_POD_BRIDGE_MIGRATION: ""}), [launcher("uid-1")], [])
    assert isinstance(none, NoTarget) and "no fixer container of ours" in none.why


def test_cli_refuses_a_vmi_that_is_not_ns_slash_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status", "just-a-name"]) == 2
    assert "expected NS/NAME" in capsys.readouterr().err


def test_cli_node_fixup_exits_2_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = client.Cluster(api=None, default_namespace="default")
    monkeypatch.setattr(client, "connect", lambda conn: cluster)
    monkeypatch.setattr(client, "get_vmi", lambda c, ns, name: vmi(name, NODE))
    monkeypatch.setattr(client, "launcher_and_agent_pods", lambda c, ns: ([], [agent("node-a")]))
    assert cli.main(["fixup", "apps/a", "--dry-run"]) == 2
    assert "node agent" in capsys.readouterr().err


def test_cli_fixup_runs_kubectl_exec_with_the_connection_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = client.Cluster(api=None, default_namespace="default")
    monkeypatch.setattr(client, "connect", lambda conn: cluster)
    monkeypatch.setattr(client, "get_vmi", lambda c, ns, name: vmi(name, INJECT))
    pod = launcher("uid-1", init=[{"name": "bridge-migration"}])
    monkeypatch.setattr(client, "launcher_and_agent_pods", lambda c, ns: ([pod], []))
    ran: list[list[str]] = []

    class Done:
        returncode = 3

    def fake_run(argv: list[str], check: bool) -> Any:
        ran.append(argv)
        return Done()

    monkeypatch.setattr(cli.subprocess, "run", fake_run)
    monkeypatch.setenv("KUBECTL", "/opt/kubectl")
    code = cli.main(["fixup", "apps/a", "--kubeconfig", "/k.yaml", "--context", "c1"])
    assert code == 3
    assert ran == [
        ["/opt/kubectl", "--kubeconfig=/k.yaml", "--context=c1", "exec", "-n", "apps", "virt-launcher-uid-1",
         "-c", "bridge-migration", "--", "python", "-m", "sidecar", "fixup"],
    ]  # fmt: skip
    assert DEFAULT_KEYS.delivery == "bridge-migration.kubevirt.io/delivery"
