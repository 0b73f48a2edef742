"""Node mode in the chart: off by default; on, a Plugin CR and a least-privilege DaemonSet."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kubelab.chart import CHART_DIR
from sidecar.cli import build_parser
from tests.chart.conftest import Render, by_kind, one
from tests.chart.test_rendering import K8S_SCHEMA_VERSION

NODE_ON = {"node": {"enabled": True}}


def _agent(objects: list[dict[str, Any]]) -> dict[str, Any]:
    ds = one(objects, "DaemonSet")
    (container,) = ds["spec"]["template"]["spec"]["containers"]
    return container


def test_node_mode_is_off_by_default(render: Render) -> None:
    objects = render()
    assert by_kind(objects, "DaemonSet") == []
    assert by_kind(objects, "Plugin") == []


def test_the_plugin_cr_asks_for_post_migration_target_with_ignore_on_the_hook_itself(render: Render) -> None:
    plugin = one(render(NODE_ON), "Plugin")
    assert plugin["apiVersion"] == "plugin.kubevirt.io/v1alpha1"
    assert "namespace" not in plugin["metadata"]  # cluster-scoped (facts P1)
    assert plugin["metadata"]["name"] == "bridge-migration"
    (hook,) = plugin["spec"]["nodeHooks"]
    assert hook == {
        "socket": "/var/run/kubevirt/plugins/bridge-migration.sock",
        "permittedHooks": ["PostMigrationTarget"],
        "failureStrategy": "Ignore",
        "timeout": "30s",
    }
    renamed = one(render({"node": {"enabled": True, "pluginName": "bm", "timeoutSeconds": 10}}), "Plugin")
    assert renamed["spec"]["nodeHooks"][0]["socket"] == "/var/run/kubevirt/plugins/bm.sock"
    assert renamed["spec"]["nodeHooks"][0]["timeout"] == "10s"


def test_the_agent_serves_the_socket_the_plugin_names_and_knows_its_node(render: Render) -> None:
    objects = render(NODE_ON)
    socket = one(objects, "Plugin")["spec"]["nodeHooks"][0]["socket"]
    agent = _agent(objects)
    assert agent["command"] == ["python", "-m", "sidecar", "node-agent"]
    # The args are the agent's own flags: parsed by its real argument parser.
    args = build_parser().parse_args(["node-agent", *agent["args"]])
    assert (args.socket, args.kubelet_pods_dir, float(args.deadline)) == (socket, "/var/lib/kubelet/pods", 20.0)
    env = {e["name"]: e for e in agent["env"]}
    assert env["BM_SIDECAR_NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert agent["image"].startswith("ghcr.io/kubevirt-bridge-migration/bridge-migration-sidecar:")


def test_the_daemonset_has_least_privilege(render: Render) -> None:
    objects = render(NODE_ON)
    pod = one(objects, "DaemonSet")["spec"]["template"]["spec"]
    agent = _agent(objects)
    sc = agent["securityContext"]
    assert (sc["runAsUser"], sc["privileged"], sc["allowPrivilegeEscalation"]) == (0, False, False)
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["DAC_OVERRIDE"]}
    assert pod["automountServiceAccountToken"] is False
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    mounts = {m["name"]: m for m in agent["volumeMounts"]}
    volumes = {v["name"]: v["hostPath"] for v in pod["volumes"]}
    # Exactly two host paths: our socket's directory (read-write) and the kubelet's pods (read-only).
    assert volumes == {
        "plugins": {"path": "/var/run/kubevirt/plugins", "type": "DirectoryOrCreate"},
        "kubelet-pods": {"path": "/var/lib/kubelet/pods", "type": "Directory"},
    }
    assert mounts["kubelet-pods"]["readOnly"] is True
    assert not mounts["plugins"].get("readOnly")
    custom = render({"node": {"enabled": True, "kubeletRoot": "/var/lib/k0s/kubelet/"}})
    paths = {v["hostPath"]["path"] for v in one(custom, "DaemonSet")["spec"]["template"]["spec"]["volumes"]}
    assert "/var/lib/k0s/kubelet/pods" in paths


def test_the_agents_labels_do_not_select_the_webhooks_pods(render: Render) -> None:
    objects = render(NODE_ON)
    ds_selector = one(objects, "DaemonSet")["spec"]["selector"]["matchLabels"]
    deploy_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert not all(deploy_labels.get(k) == v for k, v in ds_selector.items())


def test_the_daemonset_validates_against_the_kubernetes_schema(render: Render) -> None:
    kubernetes_validate.validate(one(render(NODE_ON), "DaemonSet"), K8S_SCHEMA_VERSION, strict=True)


@pytest.mark.parametrize(
    "node",
    [
        {"enabled": True, "deadlineSeconds": 30},
        {"enabled": True, "timeoutSeconds": 1},
        {"enabled": True, "pluginName": "Bad_Name"},
        {"enabled": True, "kubeletRoot": "relative/path"},
        {"enabled": True, "typo": 1},
    ],
)
def test_bad_node_values_are_refused_at_install_time(render: Render, node: dict[str, Any]) -> None:
    with pytest.raises(RuntimeError, match="values don't meet the specifications of the schema"):
        render({"node": node})


def test_helm_lint_strict_is_clean_with_node_mode(helm: Path, tmp_path: Path) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(NODE_ON))
    result = subprocess.run(
        [str(helm), "lint", "--strict", str(CHART_DIR), "-f", str(values_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


def test_the_macvtap_release_runs_the_agent_without_node_mode_with_the_privileges_it_needs(render: Render) -> None:
    objects = render({"node": {"releaseStaleMacvtap": True}})
    assert by_kind(objects, "Plugin") == [], "no node mode was asked for"
    ds = one(objects, "DaemonSet")
    assert ds["spec"]["template"]["spec"]["hostPID"] is True
    agent = _agent(objects)
    args = build_parser().parse_args(["node-agent", *agent["args"]])
    assert args.release_stale_macvtap is True
    caps = agent["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"]
    assert sorted(caps["add"]) == ["DAC_OVERRIDE", "NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"]
    assert agent["securityContext"]["privileged"] is False


def test_without_the_macvtap_release_the_agent_keeps_one_capability_and_no_host_pid(render: Render) -> None:
    objects = render(NODE_ON)
    assert "hostPID" not in one(objects, "DaemonSet")["spec"]["template"]["spec"]
    agent = _agent(objects)
    assert agent["securityContext"]["capabilities"]["add"] == ["DAC_OVERRIDE"]
    assert "--release-stale-macvtap" not in agent["args"]
