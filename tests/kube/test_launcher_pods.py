"""virt-launcher pods as KubeVirt's virt-controller renders them from a stored VMI (kubelab's
fake virt-controller), created through the real API server and our pod webhook."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge_migration_contract import (
    DEFAULT_KEYS,
    HOOK_SIDECARS,
    LIBVIRT_RUNTIME_PATH,
    LIBVIRT_RUNTIME_VOLUME,
    MIGRATION_JOB_NAME_ANNOTATION,
    MIGRATION_JOB_UID_LABEL,
    PODINFO_DIR,
    PODINFO_VOLUME,
    parse_macs,
)
from kubelab.fake_virt_controller import render_launcher_pod
from kubelab.kubectl import Kubectl
from kubelab.lab import CNI_MAC_ANNOTATION, OBSERVED_KUBEVIRT_VERSION, SIDECAR_IMAGE
from tests.kube.conftest import user_annotations, vmi_manifest

pytestmark = pytest.mark.kube


MIGRATION = {"name": "migration-job", "uid": "6f1c2f9e-0000-4000-8000-000000000001"}


def launcher_pod(
    name: str, vmi: dict[str, Any], *, target: bool = False, kubevirt_version: str = "v1.9.0"
) -> dict[str, Any]:
    """The pod virt-controller creates for the stored ``vmi``, rendered by kubelab's fake
    virt-controller (kubelab/fake_virt_controller.py, not KubeVirt): compute, one hook-sidecar
    container per hookSidecars entry; with ``target``, a migration's target pod."""
    return render_launcher_pod(
        vmi, name=name, migration=MIGRATION if target else None, kubevirt_version=kubevirt_version
    )


def _stored_vmi(kubectl: Kubectl, namespace: str, name: str, **manifest: Any) -> dict[str, Any]:
    """Create a bridge VMI through the webhook (and the fake virt-api); the stored VMI is what
    virt-controller renders the pod from."""
    kubectl.apply(vmi_manifest(name, namespace, **manifest))
    return kubectl.get("vmi", name, namespace=namespace)


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod["spec"]["containers"] if c["name"] == name)


def test_our_sidecar_gets_the_libvirt_runtime_and_the_pod_annotations(kubectl: Kubectl, namespace: str) -> None:
    vmi = _stored_vmi(kubectl, namespace, "vm-a")
    manifest = launcher_pod("virt-launcher-vm-a-abcde", vmi)
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
        m["name"] for m in _container(manifest, "compute")["volumeMounts"]
    ]
    assert LIBVIRT_RUNTIME_VOLUME in {m["name"] for m in compute["volumeMounts"]}
    # Not a migration target: no CNI MAC hint.
    assert CNI_MAC_ANNOTATION not in pod["metadata"]["annotations"]
    # The KubeVirt version virt-operator reports, for the sidecar's DHCP MAC rule.
    assert pod["metadata"]["annotations"][DEFAULT_KEYS.kubevirt_version] == OBSERVED_KUBEVIRT_VERSION


def test_a_migration_target_pod_also_gets_the_expected_and_cni_mac_annotations(
    kubectl: Kubectl, namespace: str
) -> None:
    vmi = _stored_vmi(kubectl, namespace, "vm-b")
    expected = parse_macs(user_annotations(vmi)[DEFAULT_KEYS.macs])
    manifest = launcher_pod("virt-launcher-vm-b-target", vmi, target=True)
    kubectl.apply(manifest)
    pod = kubectl.get("pod", "virt-launcher-vm-b-target", namespace=namespace)
    stored = pod["metadata"]["annotations"]
    assert parse_macs(stored[DEFAULT_KEYS.macs]) == expected
    assert stored[CNI_MAC_ANNOTATION] == expected["default"]
    assert pod["metadata"]["labels"][MIGRATION_JOB_UID_LABEL] == MIGRATION["uid"]
    assert stored[MIGRATION_JOB_NAME_ANNOTATION] == MIGRATION["name"]
    assert {m["name"] for m in _container(pod, "hook-sidecar-0")["volumeMounts"]} >= {
        LIBVIRT_RUNTIME_VOLUME,
        PODINFO_VOLUME,
    }


def test_a_target_pod_without_the_macs_annotation_gets_them_from_the_vmi(kubectl: Kubectl, namespace: str) -> None:
    vmi = _stored_vmi(kubectl, namespace, "vm-c")
    expected = parse_macs(user_annotations(vmi)[DEFAULT_KEYS.macs])
    del vmi["metadata"]["annotations"][DEFAULT_KEYS.macs]  # as if the VMI had lost it before the copy
    kubectl.apply(launcher_pod("virt-launcher-vm-c-target", vmi, target=True))
    stored = kubectl.get("pod", "virt-launcher-vm-c-target", namespace=namespace)["metadata"]["annotations"]
    assert parse_macs(stored[DEFAULT_KEYS.macs]) == expected
    assert stored[CNI_MAC_ANNOTATION] == expected["default"]


def test_a_pod_that_is_not_a_virt_launcher_is_never_sent_to_the_webhook(kubectl: Kubectl, namespace: str) -> None:
    manifest = launcher_pod("plain", _stored_vmi(kubectl, namespace, "x"))
    del manifest["metadata"]["labels"]["kubevirt.io"]
    kubectl.apply(manifest)
    pod = kubectl.get("pod", "plain", namespace=namespace)
    # The sidecar keeps exactly the mounts virt-controller gave it (the hook sockets): none of ours.
    assert _container(pod, "hook-sidecar-0")["volumeMounts"] == _container(manifest, "hook-sidecar-0")["volumeMounts"]
    assert PODINFO_VOLUME not in {v["name"] for v in pod["spec"]["volumes"]}


def test_a_launcher_pod_of_an_earlier_release_still_gets_the_libvirt_runtime(kubectl: Kubectl, namespace: str) -> None:
    """After `helm upgrade` the sidecar tag changes; a VMI admitted before it starts (or is the
    target of a migration) with the old tag, and its sidecar still needs the libvirt socket."""
    vmi = _stored_vmi(kubectl, namespace, "vm-old")
    old_image = SIDECAR_IMAGE.rpartition(":")[0] + ":0.0.9"
    # The VMI was admitted by the earlier release: its hookSidecars entry names the old tag.
    entries = json.loads(vmi["metadata"]["annotations"][HOOK_SIDECARS])
    for entry in entries:
        if entry["image"] == SIDECAR_IMAGE:
            entry["image"] = old_image
    vmi["metadata"]["annotations"][HOOK_SIDECARS] = json.dumps(entries)
    manifest = launcher_pod("virt-launcher-vm-old-abcde", vmi, target=True)
    kubectl.apply(manifest)
    pod = kubectl.get("pod", "virt-launcher-vm-old-abcde", namespace=namespace)
    sidecar = _container(pod, "hook-sidecar-0")
    assert sidecar["image"] == old_image
    mounts = {m["name"]: m for m in sidecar["volumeMounts"]}
    assert mounts[LIBVIRT_RUNTIME_VOLUME]["mountPath"] == LIBVIRT_RUNTIME_PATH
    assert PODINFO_VOLUME in mounts
