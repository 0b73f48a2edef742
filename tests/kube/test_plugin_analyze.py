"""`kubectl bridge-migration analyze` through a real kube-apiserver, run as a user runs it: kubectl
finds bin/kubectl-bridge_migration on PATH (krew-style) and the plugin reads the lab's cluster with
the lab's kubeconfig.

Its own AdmissionLab: ``-A`` sees every namespace, and the session lab's other tests leave VMIs there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge_migration_contract import ALLOW_POD_BRIDGE_MIGRATION, DEFAULT_KEYS
from kubelab.fake_virt_controller import render_launcher_pod
from kubelab.lab import AdmissionLab, kubevirt_cr
from kubelab.tools import find_tools
from tests.kube.conftest import vmi_manifest
from tests.kube.test_vms import vm_manifest

pytestmark = pytest.mark.kube

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lab() -> Iterator[AdmissionLab]:
    with AdmissionLab(tools=find_tools()) as running:
        yield running


def plugin(lab: AdmissionLab, *args: str) -> subprocess.CompletedProcess[str]:
    """``kubectl bridge-migration ARGS`` with bin/ on PATH, as after `cp bin/kubectl-bridge_migration ~/bin`."""
    kubectl = lab.kubectl
    path = os.pathsep.join([str(REPO / "bin"), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    argv = [str(kubectl.binary), "bridge-migration", *args, f"--kubeconfig={kubectl.kubeconfig}"]
    env = {**os.environ, "PATH": path}
    env.pop("KUBECONFIG", None)
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, env=env, cwd="/")


def row(stdout: str, name: str) -> list[str]:
    """The table's row of the VM ``name``, split on kubectl's column gaps."""
    header, *lines = stdout.splitlines()
    (line,) = [ln for ln in lines if ln.split()[1] == name and ln.split()[2] == "vm"]
    cols = [header.index(h) for h in header.split()]
    return [line[a:b].strip() for a, b in zip(cols, [*cols[1:], None], strict=True)]


def test_analyze_lists_a_vm_a_drain_would_strand_and_exits_1_until_it_is_fixed(lab: AdmissionLab) -> None:
    kubectl = lab.kubectl
    kubectl.create_namespace("shop")
    kubectl.apply(vm_manifest("web", "shop"))  # Sidecar gate on, delivery auto: our hook sidecar entry
    db = vm_manifest("db", "shop")  # on masquerade: not ours
    db["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"] = [{"name": "default", "masquerade": {}}]
    kubectl.apply(db)
    legacy = vm_manifest("legacy", "shop")  # opted out on its own annotations: the webhook leaves it alone
    legacy["metadata"]["annotations"] = {DEFAULT_KEYS.enabled: "false"}
    kubectl.apply(legacy)

    ok = plugin(lab, "analyze", "-A")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert row(ok.stdout, "web")[3:] == ["default", "yes", "hook", "yes (hook: Sidecar gate on)", "-", "no"]
    assert row(ok.stdout, "db")[3:] == ["no (no bridge/macvtap)", "-", "-", "-", "-", "no"]
    assert row(ok.stdout, "legacy")[3:] == [
        "no (opted out: VM)",
        "no",
        "-",
        "no (no hook entry or delivery record)",
        "-",
        "no",
    ]
    print(ok.stdout)

    # The admin turns KubeVirt's Sidecar gate off: every hook VM is still migratable, and no fixer will come.
    kubectl.apply(kubevirt_cr(sidecar_gate=False))
    try:
        stranded = plugin(lab, "analyze", "-A")
        print(stranded.stdout)
        assert stranded.returncode == 1, stranded.stdout + stranded.stderr
        assert row(stranded.stdout, "web")[6:] == ["no (hook: Sidecar gate off)", "-", "yes"]
        assert "stranded on drain: VirtualMachine shop/web: migratable with no fixer" in stranded.stderr
        as_json = plugin(lab, "analyze", "-n", "shop", "-o", "json")
        assert as_json.returncode == 1
        doc = json.loads(as_json.stdout)
        assert doc["stranded"] == 1 and [i["name"] for i in doc["items"] if i["stranded"]] == ["web"]
    finally:
        kubectl.apply(kubevirt_cr(sidecar_gate=True))  # the fix: the gate back on

    fixed = plugin(lab, "analyze", "-A")
    print(fixed.stdout)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert row(fixed.stdout, "web")[-1] == "no"


def test_analyze_of_an_empty_namespace_exits_0_and_says_so(lab: AdmissionLab) -> None:
    lab.kubectl.create_namespace("empty")
    result = plugin(lab, "analyze", "-n", "empty")
    assert (result.returncode, result.stdout) == (0, "")
    assert "No VirtualMachines or VirtualMachineInstances in namespace empty." in result.stderr


def test_status_of_a_vmi_without_a_launcher_pod_exits_2_with_the_reason(lab: AdmissionLab) -> None:
    lab.kubectl.create_namespace("solo")
    vmi = vm_manifest("lonely", "solo")["spec"]["template"]
    lab.kubectl.apply({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                       "metadata": {"name": "lonely", "namespace": "solo"}, "spec": vmi["spec"]})  # fmt: skip
    result = plugin(lab, "status", "solo/lonely")
    assert result.returncode == 2
    assert "solo/lonely has no launcher pod" in result.stderr


def test_vmis_are_judged_by_their_launcher_pods_and_status_execs_into_our_container(lab: AdmissionLab) -> None:
    kubectl = lab.kubectl
    kubectl.create_namespace("pods")
    # Delivery inject, chosen on the VMI: the pod webhook adds our container to its launcher pod.
    kubectl.apply(vmi_manifest("fixed", "pods", annotations={DEFAULT_KEYS.delivery: "inject"}))
    kubectl.apply(render_launcher_pod(kubectl.get("vmi", "fixed", namespace="pods"), name="virt-launcher-fixed-1"))
    # Made migratable by hand and opted out of the add-on: nothing of ours on its pod.
    by_hand = {DEFAULT_KEYS.enabled: "false", ALLOW_POD_BRIDGE_MIGRATION: "true"}
    kubectl.apply(vmi_manifest("by-hand", "pods", annotations=by_hand))
    kubectl.apply(render_launcher_pod(kubectl.get("vmi", "by-hand", namespace="pods"), name="virt-launcher-by-hand-1"))

    result = plugin(lab, "analyze", "-n", "pods")
    print(result.stdout)
    assert result.returncode == 1, result.stdout + result.stderr
    rows = {line.split()[1]: line for line in result.stdout.splitlines()[1:]}
    assert "inject: container bridge-migration" in rows["fixed"] and rows["fixed"].endswith(" no")
    assert "no (opted out: VMI)" in rows["by-hand"] and rows["by-hand"].endswith(" yes")
    assert "VirtualMachineInstance pods/by-hand: migratable with no fixer" in result.stderr

    kubectl.run("annotate", "vmi", "by-hand", "-n", "pods", f"{ALLOW_POD_BRIDGE_MIGRATION}-")  # the fix
    after = plugin(lab, "analyze", "-n", "pods")
    assert after.returncode == 0, after.stdout + after.stderr

    # status finds our container and runs kubectl exec there (kubelab has no kubelet to run it).
    status = plugin(lab, "status", "pods/fixed")
    assert "# inject fixer: pod pods/virt-launcher-fixed-1, container bridge-migration" in status.stderr
    assert status.returncode != 0
    refused = plugin(lab, "fixup", "pods/by-hand", "--dry-run")
    assert refused.returncode == 2 and "no fixer container of ours" in refused.stderr
