"""Pods shaped like virt-launcher pods, created through the real API server."""

from __future__ import annotations

from typing import Any

import pytest

from bridge_migration_contract import (
    DEFAULT_KEYS,
    LIBVIRT_RUNTIME_PATH,
    LIBVIRT_RUNTIME_VOLUME,
    MIGRATION_JOB_NAME_ANNOTATION,
    MIGRATION_JOB_UID_LABEL,
    PODINFO_DIR,
    PODINFO_VOLUME,
    parse_macs,
)
from kubelab.kubectl import Kubectl
from kubelab.lab import CNI_MAC_ANNOTATION, OBSERVED_KUBEVIRT_VERSION, SIDECAR_IMAGE
from tests.kube.conftest import user_annotations, vmi_manifest

pytestmark = pytest.mark.kube


def launcher_pod(
    name: str, namespace: str, *, vmi: str, annotations: dict[str, str], target: bool = False
) -> dict[str, Any]:
    """What virt-controller creates for a VMI: compute container with the libvirt runtime volume,
    plus the hook sidecar container from the VMI's hookSidecars annotation."""
    labels = {"kubevirt.io": "virt-launcher", "vm.kubevirt.io/name": vmi}
    ann = {**annotations, "kubevirt.io/domain": vmi}
    if target:
        labels[MIGRATION_JOB_UID_LABEL] = "6f1c2f9e-0000-4000-8000-000000000001"
        ann[MIGRATION_JOB_NAME_ANNOTATION] = f"{vmi}-migration"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": ann},
        "spec": {
            "containers": [
                {
                    "name": "compute",
                    "image": "example.org/virt-launcher:v1",
                    "volumeMounts": [{"name": LIBVIRT_RUNTIME_VOLUME, "mountPath": LIBVIRT_RUNTIME_PATH}],
                },
                {"name": "hook-sidecar-0", "image": SIDECAR_IMAGE, "command": ["python", "-m", "sidecar", "serve"]},
            ],
            "volumes": [{"name": LIBVIRT_RUNTIME_VOLUME, "emptyDir": {}}],
        },
    }


def _vmi_annotations(kubectl: Kubectl, namespace: str, name: str) -> dict[str, str]:
    """Create a bridge VMI through the webhook; virt-controller copies its annotations to the pod."""
    kubectl.apply(vmi_manifest(name, namespace))
    return user_annotations(kubectl.get("vmi", name, namespace=namespace))


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod["spec"]["containers"] if c["name"] == name)


def test_our_sidecar_gets_the_libvirt_runtime_and_the_pod_annotations(kubectl: Kubectl, namespace: str) -> None:
    ann = _vmi_annotations(kubectl, namespace, "vm-a")
    manifest = launcher_pod("virt-launcher-vm-a-abcde", namespace, vmi="vm-a", annotations=ann)
    kubectl.apply(manifest)
    pod = kubectl.get("pod", "virt-launcher-vm-a-abcde", namespace=namespace)
    mounts = {m["name"]: m for m in _container(pod, "hook-sidecar-0")["volumeMounts"]}
    assert mounts[LIBVIRT_RUNTIME_VOLUME]["mountPath"] == LIBVIRT_RUNTIME_PATH
    assert mounts[PODINFO_VOLUME]["mountPath"] == PODINFO_DIR
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes[PODINFO_VOLUME]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"] == "metadata.annotations"
    # The compute container is left as virt-controller made it.
    compute = _container(pod, "compute")
    assert [m["name"] for m in compute["volumeMounts"] if not m["name"].startswith("kube-api-access")] == [
        LIBVIRT_RUNTIME_VOLUME
    ]
    # Not a migration target: no CNI MAC hint.
    assert CNI_MAC_ANNOTATION not in pod["metadata"]["annotations"]
    # The KubeVirt version virt-operator reports, for the sidecar's DHCP MAC rule.
    assert pod["metadata"]["annotations"][DEFAULT_KEYS.kubevirt_version] == OBSERVED_KUBEVIRT_VERSION


def test_a_migration_target_pod_also_gets_the_expected_and_cni_mac_annotations(
    kubectl: Kubectl, namespace: str
) -> None:
    ann = _vmi_annotations(kubectl, namespace, "vm-b")
    expected = parse_macs(ann[DEFAULT_KEYS.macs])
    manifest = launcher_pod("virt-launcher-vm-b-target", namespace, vmi="vm-b", annotations=ann, target=True)
    kubectl.apply(manifest)
    pod = kubectl.get("pod", "virt-launcher-vm-b-target", namespace=namespace)
    stored = pod["metadata"]["annotations"]
    assert parse_macs(stored[DEFAULT_KEYS.macs]) == expected
    assert stored[CNI_MAC_ANNOTATION] == expected["default"]
    assert {m["name"] for m in _container(pod, "hook-sidecar-0")["volumeMounts"]} >= {
        LIBVIRT_RUNTIME_VOLUME,
        PODINFO_VOLUME,
    }


def test_a_target_pod_without_the_macs_annotation_gets_them_from_the_vmi(kubectl: Kubectl, namespace: str) -> None:
    ann = _vmi_annotations(kubectl, namespace, "vm-c")
    expected = parse_macs(ann[DEFAULT_KEYS.macs])
    without = {k: v for k, v in ann.items() if k != DEFAULT_KEYS.macs}
    kubectl.apply(launcher_pod("virt-launcher-vm-c-target", namespace, vmi="vm-c", annotations=without, target=True))
    stored = kubectl.get("pod", "virt-launcher-vm-c-target", namespace=namespace)["metadata"]["annotations"]
    assert parse_macs(stored[DEFAULT_KEYS.macs]) == expected
    assert stored[CNI_MAC_ANNOTATION] == expected["default"]


def test_a_pod_that_is_not_a_virt_launcher_is_never_sent_to_the_webhook(kubectl: Kubectl, namespace: str) -> None:
    manifest = launcher_pod("plain", namespace, vmi="x", annotations={})
    del manifest["metadata"]["labels"]["kubevirt.io"]
    kubectl.apply(manifest)
    pod = kubectl.get("pod", "plain", namespace=namespace)
    assert "volumeMounts" not in _container(pod, "hook-sidecar-0")


def test_a_launcher_pod_of_an_earlier_release_still_gets_the_libvirt_runtime(kubectl: Kubectl, namespace: str) -> None:
    """After `helm upgrade` the sidecar tag changes; a VMI admitted before it starts (or is the
    target of a migration) with the old tag, and its sidecar still needs the libvirt socket."""
    ann = _vmi_annotations(kubectl, namespace, "vm-old")
    manifest = launcher_pod("virt-launcher-vm-old-abcde", namespace, vmi="vm-old", annotations=ann, target=True)
    old_image = SIDECAR_IMAGE.rpartition(":")[0] + ":0.0.9"
    manifest["spec"]["containers"][1]["image"] = old_image
    kubectl.apply(manifest)
    pod = kubectl.get("pod", "virt-launcher-vm-old-abcde", namespace=namespace)
    sidecar = _container(pod, "hook-sidecar-0")
    assert sidecar["image"] == old_image
    mounts = {m["name"]: m for m in sidecar["volumeMounts"]}
    assert mounts[LIBVIRT_RUNTIME_VOLUME]["mountPath"] == LIBVIRT_RUNTIME_PATH
    assert PODINFO_VOLUME in mounts
