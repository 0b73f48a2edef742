"""The uninstall cleanup through the real kube-apiserver: VMs and a VMI admitted by the chart's
webhooks, then `python -m kubectl_bridge_migration.cleanup` run as the chart's pre-delete hook runs
it (its ServiceAccount and ClusterRole from templates/cleanup-hook.yaml, its arguments from the Job),
while the webhook still serves, as it does during a pre-delete hook."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge_migration_contract import ALLOW_POD_BRIDGE_MIGRATION, DEFAULT_KEYS, HOOK_SIDECARS
from kubectl_bridge_migration.cleanup import record_keys
from kubelab.kubectl import Kubectl
from kubelab.lab import RELEASE_NAMESPACE, SIDECAR_IMAGE, AdmissionLab
from kubelab.tools import REPO_ROOT
from tests.kube.conftest import user_annotations, vmi_manifest
from tests.kube.test_vms import vm_manifest

pytestmark = pytest.mark.kube

ON_UNINSTALL = {"cleanup": {"onUninstall": True}}
USER_HOOK = {"image": "registry.example.org/my-hook:1", "args": ["--version", "v1alpha2"]}
# What a hook-delivery admission writes (delivery and interfaces are inject's records).
WRITTEN = {
    DEFAULT_KEYS.macs,
    DEFAULT_KEYS.mac_policy,
    DEFAULT_KEYS.nic_refresh,
    ALLOW_POD_BRIDGE_MIGRATION,
    HOOK_SIDECARS,
}
OURS = {*record_keys(DEFAULT_KEYS), ALLOW_POD_BRIDGE_MIGRATION}


def _hook_objects(lab: AdmissionLab, values: dict[str, Any]) -> list[dict[str, Any]]:
    return lab.render("templates/cleanup-hook.yaml", values={**ON_UNINSTALL, **values})


@pytest.fixture(scope="module")
def hook_kubeconfig(lab: AdmissionLab) -> Iterator[Path]:
    """A kubeconfig of the hook's ServiceAccount, bound by the chart's own ClusterRole (a rule missing
    there fails here as in a cluster), and the webhook configurations as the chart renders them with
    the hook on (the VM mutator exempts that account); put back as the other tests have them after."""
    objects = _hook_objects(lab, {})
    rbac = [o for o in objects if o["kind"] != "Job"]
    assert sorted(o["kind"] for o in rbac) == ["ClusterRole", "ClusterRoleBinding", "ServiceAccount"]
    lab.kubectl.apply(rbac)
    sa = next(o["metadata"]["name"] for o in rbac if o["kind"] == "ServiceAccount")
    token = lab.kubectl.run("create", "token", sa, f"--namespace={RELEASE_NAMESPACE}").stdout.strip()
    lab.apply_webhook_configs(values=ON_UNINSTALL)
    try:
        yield lab.plane.token_kubeconfig(lab.workdir / "cleanup-hook.kubeconfig", token=token)
    finally:
        lab.apply_webhook_configs()


def job_args(lab: AdmissionLab, values: dict[str, Any], namespace: str) -> list[str]:
    """The Job's command and arguments, scoped to the test's namespace instead of -A (the lab is shared)."""
    (job,) = [o for o in _hook_objects(lab, values) if o["kind"] == "Job"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "kubectl_bridge_migration.cleanup"]
    assert container["args"][0] == "-A"
    return [sys.executable, "-m", "kubectl_bridge_migration.cleanup", "-n", namespace, *container["args"][1:]]


def run(argv: list[str], kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*argv, f"--kubeconfig={kubeconfig}"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    print(f"$ {' '.join(argv[1:])}\n{result.stdout}{result.stderr}")
    return result


def template_annotations(kubectl: Kubectl, name: str, namespace: str) -> dict[str, str]:
    vm = kubectl.get("vm", name, namespace=namespace)
    return dict(vm["spec"]["template"]["metadata"].get("annotations") or {})


def _admit(kubectl: Kubectl, namespace: str) -> None:
    """Two VMs (one with a hook of the user's) and a running VMI, through the webhook."""
    kubectl.apply(vm_manifest("web", namespace))
    with_hook = vm_manifest("hooked", namespace)
    with_hook["spec"]["template"]["metadata"]["annotations"] = {HOOK_SIDECARS: json.dumps([USER_HOOK])}
    kubectl.apply(with_hook)
    kubectl.apply(vmi_manifest("solo", namespace))
    for name in ("web", "hooked"):
        assert set(template_annotations(kubectl, name, namespace)) >= WRITTEN
    assert set(user_annotations(kubectl.get("vmi", "solo", namespace=namespace))) >= WRITTEN


def test_dry_run_lists_the_objects_and_changes_and_changes_nothing(
    lab: AdmissionLab, kubectl: Kubectl, namespace: str, hook_kubeconfig: Path
) -> None:
    _admit(kubectl, namespace)
    before = {n: kubectl.get(k, n, namespace=namespace) for k, n in (("vm", "web"), ("vm", "hooked"), ("vmi", "solo"))}
    result = run([*job_args(lab, {}, namespace), "--dry-run"], hook_kubeconfig)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"bridge-migration cleanup (dry run, nothing is changed): 3 object(s) in namespace {namespace}"
        " carry what the add-on wrote"
    )
    assert {f"VM {namespace}/web:", f"VM {namespace}/hooked:", f"VMI {namespace}/solo:"} <= set(lines)
    assert sum(f"- remove {ALLOW_POD_BRIDGE_MIGRATION}" in line for line in lines) == 3
    after = {n: kubectl.get(k, n, namespace=namespace) for k, n in (("vm", "web"), ("vm", "hooked"), ("vmi", "solo"))}
    assert {n: o["metadata"]["resourceVersion"] for n, o in after.items()} == {
        n: o["metadata"]["resourceVersion"] for n, o in before.items()
    }


def test_the_hook_takes_our_records_hook_entry_and_allow_annotation_off_and_leaves_the_macs(
    lab: AdmissionLab, kubectl: Kubectl, namespace: str, hook_kubeconfig: Path
) -> None:
    _admit(kubectl, namespace)
    vm_before = kubectl.get("vm", "web", namespace=namespace)
    print("before:", json.dumps(vm_before["spec"]["template"]["metadata"]["annotations"], indent=1))
    result = run(job_args(lab, {}, namespace), hook_kubeconfig)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "done: 3 object(s) cleaned up, 0 failed"
    assert "WARNING" not in result.stderr
    vm_after = kubectl.get("vm", "web", namespace=namespace)
    print("after:", json.dumps(vm_after["spec"]["template"]["metadata"].get("annotations"), indent=1))
    assert template_annotations(kubectl, "web", namespace) == {}
    assert vm_after["spec"]["template"]["spec"] == vm_before["spec"]["template"]["spec"]  # the pinned MAC stays
    assert template_annotations(kubectl, "hooked", namespace) == {
        HOOK_SIDECARS: json.dumps([USER_HOOK], separators=(",", ":"))
    }
    vmi = kubectl.get("vmi", "solo", namespace=namespace)
    assert not OURS & set(user_annotations(vmi))
    assert HOOK_SIDECARS not in user_annotations(vmi)
    again = run(job_args(lab, {}, namespace), hook_kubeconfig)
    assert again.returncode == 0 and "0 object(s)" in again.stdout.splitlines()[0]


def test_keep_allow_keeps_it_with_a_warning_per_object(
    lab: AdmissionLab, kubectl: Kubectl, namespace: str, hook_kubeconfig: Path
) -> None:
    _admit(kubectl, namespace)
    argv = job_args(lab, {"cleanup": {"onUninstall": True, "removeAllow": False}}, namespace)
    assert "--keep-allow" in argv
    result = run(argv, hook_kubeconfig)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING: ")]
    assert sorted(w.split(" keeps ")[0] for w in warnings) == [
        f"WARNING: VM {namespace}/hooked",
        f"WARNING: VM {namespace}/web",
        f"WARNING: VMI {namespace}/solo",
    ]
    assert template_annotations(kubectl, "web", namespace) == {ALLOW_POD_BRIDGE_MIGRATION: "true"}
    vmi = user_annotations(kubectl.get("vmi", "solo", namespace=namespace))
    assert vmi == {ALLOW_POD_BRIDGE_MIGRATION: "true"}


def test_run_as_an_admin_while_the_webhook_serves_it_says_the_webhook_put_them_back(
    lab: AdmissionLab, kubectl: Kubectl, namespace: str, hook_kubeconfig: Path
) -> None:
    kubectl.apply(vm_manifest("web", namespace))
    argv = [
        sys.executable,
        "-m",
        "kubectl_bridge_migration.cleanup",
        "-n",
        namespace,
        f"--sidecar-image={SIDECAR_IMAGE}",
    ]
    result = run(argv, kubectl.kubeconfig)
    assert result.returncode == 1
    assert f"error: VM {namespace}/web not cleaned up: the webhook put them back" in result.stderr
    assert set(template_annotations(kubectl, "web", namespace)) >= WRITTEN
