"""VirtualMachineInstanceMigrations of VMIs that would strand their guest: warned or refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bridge_migration_contract import DEFAULT_KEYS, HOOK_SIDECARS
from kubelab.kubectl import Kubectl
from kubelab.lab import AdmissionLab
from tests.kube.conftest import user_annotations, vmi_manifest

pytestmark = pytest.mark.kube


def migration(name: str, namespace: str, *, vmi: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"vmiName": vmi},
    }


def _vmi_without_our_sidecar(kubectl: Kubectl, namespace: str, name: str) -> None:
    """A bridge VMI that predates the add-on: created while the namespace was opted out."""
    kubectl.run("label", "namespace", namespace, f"{DEFAULT_KEYS.enabled}=false")
    kubectl.apply(vmi_manifest(name, namespace))
    kubectl.run("label", "namespace", namespace, f"{DEFAULT_KEYS.enabled}-")
    assert HOOK_SIDECARS not in user_annotations(kubectl.get("vmi", name, namespace=namespace))


@pytest.fixture
def strict(lab: AdmissionLab) -> Iterator[None]:
    """The webhook in strict mode behind the chart's strict rendering (validator fails closed)."""
    assert lab.webhook is not None
    lab.apply_webhook_configs({"validation": "strict"})
    lab.webhook.restart(validation="strict")
    try:
        yield
    finally:
        lab.webhook.restart(validation="warn")
        lab.apply_webhook_configs()


def test_warn_mode_admits_the_migration_and_kubectl_shows_the_warning(kubectl: Kubectl, namespace: str) -> None:
    _vmi_without_our_sidecar(kubectl, namespace, "old-vm")
    result = kubectl.apply(migration("move-old-vm", namespace, vmi="old-vm"))
    assert "Warning: bridge-migration:" in result.stderr
    assert "no bridge-migration sidecar" in result.stderr
    kubectl.get("vmim", "move-old-vm", namespace=namespace)  # it was stored


@pytest.mark.usefixtures("strict")
def test_strict_mode_refuses_the_migration_with_our_message(kubectl: Kubectl, namespace: str) -> None:
    _vmi_without_our_sidecar(kubectl, namespace, "old-vm")
    result = kubectl.apply(migration("move-old-vm", namespace, vmi="old-vm"), check=False)
    assert result.returncode != 0
    assert "denied the request" in result.stderr
    assert "no bridge-migration sidecar" in result.stderr
    assert "would keep a stale IP" in result.stderr
    missing = kubectl.run("get", "vmim", "move-old-vm", f"--namespace={namespace}", check=False)
    assert missing.returncode != 0


@pytest.mark.usefixtures("strict")
def test_strict_mode_admits_a_vmi_that_carries_our_sidecar(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(vmi_manifest("new-vm", namespace))
    result = kubectl.apply(migration("move-new-vm", namespace, vmi="new-vm"))
    assert "Warning:" not in result.stderr


@pytest.mark.usefixtures("strict")
def test_strict_mode_never_holds_a_drain_kubevirts_own_migrations_pass_with_a_warning(
    kubectl: Kubectl, namespace: str
) -> None:
    """A node drain makes virt-controller create a migration named kubevirt-evacuation-* with the
    annotation kubevirt.io/evacuationMigration (a workload update: kubevirt.io/workloadUpdateMigration).
    Refused, it would be created again and again and `kubectl drain` would never finish."""
    _vmi_without_our_sidecar(kubectl, namespace, "old-vm")
    for name, key in (
        ("kubevirt-evacuation-x1", "kubevirt.io/evacuationMigration"),
        ("kubevirt-workload-update-x1", "kubevirt.io/workloadUpdateMigration"),
    ):
        manifest = migration(name, namespace, vmi="old-vm")
        manifest["metadata"]["annotations"] = {key: "node-1" if "evacuation" in key else ""}
        result = kubectl.apply(manifest)
        assert "Warning: bridge-migration:" in result.stderr
        assert "Admitted even in strict mode: KubeVirt started it" in result.stderr
        kubectl.get("vmim", name, namespace=namespace)  # stored
