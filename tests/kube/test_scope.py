"""The chart's webhook configurations rendered with `scope: labelled`, in a real API server: the
webhooks act on VMIs, VMs and migrations only in namespaces labelled
`bridge-migration.kubevirt.io/enabled=true`; the launcher pods of a VMI that carries our records are
still completed after the label goes (tests/chart/test_scope.py checks the rendering)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bridge_migration_contract import (
    ALLOW_POD_BRIDGE_MIGRATION,
    DEFAULT_KEYS,
    HOOK_SIDECARS,
    LIBVIRT_RUNTIME_PATH,
    LIBVIRT_RUNTIME_VOLUME,
)
from kubelab.fake_virt_controller import render_launcher_pod
from kubelab.kubectl import Kubectl
from kubelab.lab import AdmissionLab
from tests.kube.conftest import user_annotations, vmi_manifest
from tests.kube.test_migration_validation import migration
from tests.kube.test_vms import vm_manifest

pytestmark = pytest.mark.kube

OPT_IN = f"{DEFAULT_KEYS.enabled}=true"
MIGRATION = {"name": "move-it", "uid": "6f1c2f9e-0000-4000-8000-00000000005c"}


@pytest.fixture
def labelled(lab: AdmissionLab) -> Iterator[None]:
    """The lab's webhook configurations as `helm install --set scope=labelled` renders them."""
    lab.apply_webhook_configs({"scope": "labelled"})
    try:
        yield
    finally:
        lab.apply_webhook_configs()


def _opted_in(kubectl: Kubectl, namespace: str) -> str:
    name = f"{namespace[:58]}-on"
    kubectl.create_namespace(name, labels={DEFAULT_KEYS.enabled: "true"})
    return name


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod["spec"]["containers"] if c["name"] == name)


@pytest.mark.usefixtures("labelled")
def test_a_vmi_in_an_unlabelled_namespace_is_stored_unchanged_and_in_a_labelled_one_gets_our_annotations(
    kubectl: Kubectl, namespace: str
) -> None:
    manifest = vmi_manifest("web", namespace)
    kubectl.apply(manifest)
    stored = kubectl.get("vmi", "web", namespace=namespace)
    assert stored["spec"] == manifest["spec"]
    assert user_annotations(stored) == {}

    on = _opted_in(kubectl, namespace)
    kubectl.apply(vmi_manifest("web", on))
    ann = user_annotations(kubectl.get("vmi", "web", namespace=on))
    assert ann[ALLOW_POD_BRIDGE_MIGRATION] == "true"
    assert {DEFAULT_KEYS.macs, DEFAULT_KEYS.mac_policy, DEFAULT_KEYS.nic_refresh, HOOK_SIDECARS} <= set(ann)


@pytest.mark.usefixtures("labelled")
def test_a_vm_in_an_unlabelled_namespace_is_stored_as_written(kubectl: Kubectl, namespace: str) -> None:
    manifest = vm_manifest("web-vm", namespace)
    kubectl.apply(manifest)
    stored = kubectl.get("vm", "web-vm", namespace=namespace)
    assert stored["spec"]["template"] == manifest["spec"]["template"]

    on = _opted_in(kubectl, namespace)
    kubectl.apply(vm_manifest("web-vm", on))
    template = kubectl.get("vm", "web-vm", namespace=on)["spec"]["template"]
    assert ALLOW_POD_BRIDGE_MIGRATION in template["metadata"]["annotations"]


@pytest.mark.usefixtures("labelled")
def test_a_migration_in_an_unlabelled_namespace_is_not_checked(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(vmi_manifest("web", namespace))  # stored as written: no fixer of ours
    result = kubectl.apply(migration("move-web", namespace, vmi="web"))
    assert "bridge-migration" not in result.stderr
    # Under the label the same VMI's migration is warned about (warn mode), as under scope cluster.
    on = _opted_in(kubectl, namespace)
    kubectl.run("label", "namespace", on, f"{DEFAULT_KEYS.enabled}-")
    kubectl.apply(vmi_manifest("web", on))
    kubectl.run("label", "namespace", on, OPT_IN)
    result = kubectl.apply(migration("move-web", on, vmi="web"))
    assert "Warning: bridge-migration:" in result.stderr


@pytest.mark.usefixtures("labelled")
def test_launcher_pods_follow_their_vmi_after_the_namespace_label_is_removed(kubectl: Kubectl, namespace: str) -> None:
    """A VM admitted while its namespace was labelled is migratable with our fixer: its target pod
    still gets the libvirt socket once the label is gone; the pod of a VMI we never touched does not
    reach the webhook."""
    on = _opted_in(kubectl, namespace)
    kubectl.apply(vmi_manifest("ours", on))
    ours = kubectl.get("vmi", "ours", namespace=on)
    kubectl.run("label", "namespace", on, f"{DEFAULT_KEYS.enabled}-")
    kubectl.apply(render_launcher_pod(ours, name="virt-launcher-ours-tgt", migration=MIGRATION))
    pod = kubectl.get("pod", "virt-launcher-ours-tgt", namespace=on)
    mounts = {m["name"]: m["mountPath"] for m in _container(pod, "hook-sidecar-0")["volumeMounts"]}
    assert mounts[LIBVIRT_RUNTIME_VOLUME] == LIBVIRT_RUNTIME_PATH
    assert DEFAULT_KEYS.kubevirt_version in pod["metadata"]["annotations"]

    kubectl.apply(vmi_manifest("theirs", namespace))
    theirs = kubectl.get("vmi", "theirs", namespace=namespace)
    kubectl.apply(render_launcher_pod(theirs, name="virt-launcher-theirs-abcde"))
    pod = kubectl.get("pod", "virt-launcher-theirs-abcde", namespace=namespace)
    assert not any(k.startswith(DEFAULT_KEYS.prefix) for k in pod["metadata"].get("annotations") or {})
