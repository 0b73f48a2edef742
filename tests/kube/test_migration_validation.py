"""VirtualMachineInstanceMigrations of VMIs that would strand their guest: warned or refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge_migration_contract import DEFAULT_KEYS, HOOK_SIDECARS
from kubelab.kubectl import Kubectl
from kubelab.lab import KUBEVIRT_NAMESPACE, AdmissionLab
from kubelab.ports import free_port
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
def test_strict_mode_never_holds_a_drain_kubevirts_own_migrations_pass_unread(kubectl: Kubectl, namespace: str) -> None:
    """A node drain makes virt-controller create a migration named kubevirt-evacuation-* with the
    annotation kubevirt.io/evacuationMigration (a workload update: kubevirt.io/workloadUpdateMigration).
    Refused, it would be created again and again and `kubectl drain` would never finish: it is
    admitted from its annotations alone, before any read (so without a warning about the VMI)."""
    _vmi_without_our_sidecar(kubectl, namespace, "old-vm")
    for name, key in KUBEVIRTS_OWN:
        result = kubectl.apply(kubevirts_own(name, key, namespace, vmi="old-vm"))
        assert "Warning: bridge-migration:" not in result.stderr
        kubectl.get("vmim", name, namespace=namespace)  # stored


KUBEVIRTS_OWN = (
    ("kubevirt-evacuation-x1", "kubevirt.io/evacuationMigration"),
    ("kubevirt-workload-update-x1", "kubevirt.io/workloadUpdateMigration"),
)


def kubevirts_own(name: str, key: str, namespace: str, *, vmi: str) -> dict[str, Any]:
    manifest = migration(name, namespace, vmi=vmi)
    manifest["metadata"]["annotations"] = {key: "node-1" if "evacuation" in key else ""}
    return manifest


@pytest.fixture
def api_unreachable(lab: AdmissionLab, tmp_path: Path) -> Iterator[None]:
    """The webhook (strict) with a kubeconfig whose server is a closed loopback port: every read fails."""
    assert lab.webhook is not None
    dead = tmp_path / "dead.kubeconfig"
    dead.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{free_port()}",
                                                       "insecure-skip-tls-verify": True}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )  # fmt: skip
    working = lab.webhook.options["kubeconfig"]
    lab.webhook.restart(kubeconfig=str(dead))
    try:
        yield
    finally:
        lab.webhook.restart(kubeconfig=working)


@pytest.mark.usefixtures("strict", "api_unreachable")
def test_strict_mode_with_the_api_unreadable_still_admits_kubevirts_own_migrations(
    kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(vmi_manifest("some-vm", namespace))
    for name, key in KUBEVIRTS_OWN:
        kubectl.apply(kubevirts_own(name, key, namespace, vmi="some-vm"))
        kubectl.get("vmim", name, namespace=namespace)  # stored
    # A user's migration it cannot check is refused, as strict mode says.
    result = kubectl.apply(migration("by-hand", namespace, vmi="some-vm"), check=False)
    assert result.returncode != 0 and "could not read VMI" in result.stderr


def controller_kubectl(lab: AdmissionLab, kubectl: Kubectl, tmp_path: Path) -> Kubectl:
    """kubectl as virt-controller's ServiceAccount (kubevirt/kubevirt-controller), allowed to
    create migrations as virt-controller is."""
    kubectl.apply(
        [
            {"apiVersion": "v1", "kind": "ServiceAccount",
             "metadata": {"name": "kubevirt-controller", "namespace": KUBEVIRT_NAMESPACE}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": {"name": "test-virt-controller"},
             "rules": [{"apiGroups": ["kubevirt.io"], "resources": ["virtualmachineinstancemigrations"],
                        "verbs": ["get", "create"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": "test-virt-controller"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": "test-virt-controller"},
             "subjects": [{"kind": "ServiceAccount", "name": "kubevirt-controller",
                           "namespace": KUBEVIRT_NAMESPACE}]},
        ]
    )  # fmt: skip
    token = kubectl.run("create", "token", "kubevirt-controller", f"--namespace={KUBEVIRT_NAMESPACE}").stdout.strip()
    config = lab.plane.token_kubeconfig(tmp_path / "controller.kubeconfig", token=token)
    return Kubectl(binary=kubectl.binary, kubeconfig=config)


@pytest.mark.usefixtures("strict")
def test_with_the_webhook_down_in_strict_mode_virt_controllers_migrations_still_pass(
    lab: AdmissionLab, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    """Strict mode renders failurePolicy Fail: with the webhook down, a user's migration is refused
    by the API server, but the chart's matchConditions send virt-controller's (in kubevirtNamespace)
    nowhere, so a drain proceeds."""
    assert lab.webhook is not None
    kubectl.apply(vmi_manifest("some-vm", namespace))
    controller = controller_kubectl(lab, kubectl, tmp_path)
    lab.webhook.stop()
    try:
        refused = kubectl.apply(migration("by-hand", namespace, vmi="some-vm"), check=False)
        assert refused.returncode != 0 and "failed calling webhook" in refused.stderr
        name, key = KUBEVIRTS_OWN[0]
        controller.apply(kubevirts_own(name, key, namespace, vmi="some-vm"))
        kubectl.get("vmim", name, namespace=namespace)  # stored
    finally:
        lab.webhook.start()
