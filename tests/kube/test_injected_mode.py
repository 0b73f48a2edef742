"""Delivery inject through kube-apiserver: our VMI webhook, the fake virt-api behind it, the fake
virt-controller rendering the launcher pod (kubelab's stand-ins, not KubeVirt), and our pod webhook
adding the fixer container. No kubelet runs here: what the API server stores and computes
(``status.qosClass``) is shown; what a kubelet would do with the pod (pull, start) is not."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bridge_migration_contract import (
    ALLOW_POD_BRIDGE_MIGRATION,
    DEFAULT_KEYS,
    HOOK_SIDECARS,
    INJECTED_CONTAINER,
    LIBVIRT_RUNTIME_PATH,
    LIBVIRT_RUNTIME_VOLUME,
    PODINFO_DIR,
    PODINFO_VOLUME,
)
from kubelab.fake_virt_controller import render_launcher_pod
from kubelab.kubectl import Kubectl
from kubelab.lab import SIDECAR_IMAGE, AdmissionLab
from tests.kube.conftest import user_annotations, vmi_manifest
from tests.kube.test_migration_validation import migration

pytestmark = pytest.mark.kube

WRONG_IMAGE = "registry.invalid/nobody/bridge-migration-sidecar:does-not-exist"


@pytest.fixture
def inject(lab: AdmissionLab) -> Iterator[AdmissionLab]:
    """The webhook started with ``--delivery inject`` (the Sidecar gate stays on)."""
    assert lab.webhook is not None
    lab.webhook.restart(delivery="inject")
    try:
        yield lab
    finally:
        lab.webhook.restart(delivery="auto", sidecar_image=SIDECAR_IMAGE)


def _ours(pod: dict[str, Any]) -> dict[str, Any]:
    [container] = [c for c in pod["spec"]["containers"] if c["name"] == INJECTED_CONTAINER]
    return container


def _launcher_pod(kubectl: Kubectl, namespace: str, vmi_name: str) -> dict[str, Any]:
    """Play virt-controller: render the stored VMI's pod and create it; return the stored pod."""
    vmi = kubectl.get("vmi", vmi_name, namespace=namespace)
    kubectl.apply(render_launcher_pod(vmi, name=f"virt-launcher-{vmi_name}-x"))
    return kubectl.get("pod", f"virt-launcher-{vmi_name}-x", namespace=namespace)


def _with_resources(name: str, namespace: str, resources: dict[str, Any]) -> dict[str, Any]:
    manifest = vmi_manifest(name, namespace)
    manifest["spec"]["domain"]["resources"] = resources
    return manifest


@pytest.mark.usefixtures("inject")
def test_a_guaranteed_vmis_pod_gets_our_container_and_stays_guaranteed(kubectl: Kubectl, namespace: str) -> None:
    both = {"cpu": "1", "memory": "128Mi"}
    kubectl.apply(_with_resources("sized", namespace, {"requests": dict(both), "limits": dict(both)}))
    stored_vmi = user_annotations(kubectl.get("vmi", "sized", namespace=namespace))
    assert stored_vmi[DEFAULT_KEYS.delivery] == "inject"
    assert HOOK_SIDECARS not in stored_vmi
    pod = _launcher_pod(kubectl, namespace, "sized")
    assert [c["name"] for c in pod["spec"]["containers"]] == ["compute", INJECTED_CONTAINER]
    ours = _ours(pod)
    assert ours["image"] == SIDECAR_IMAGE
    assert ours["command"] == ["python", "-m", "sidecar", "serve", "--delivery", "inject"]
    assert ours["resources"]["requests"] == ours["resources"]["limits"] == {"cpu": "200m", "memory": "64M"}
    sc = ours["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"], sc["runAsNonRoot"]) == (107, 107, True)
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert {m["name"]: m["mountPath"] for m in ours["volumeMounts"]} == {
        LIBVIRT_RUNTIME_VOLUME: LIBVIRT_RUNTIME_PATH,
        PODINFO_VOLUME: PODINFO_DIR,
    }
    assert "readinessProbe" not in ours
    # The API server computes the QoS class at creation, after our mutation.
    assert pod["status"]["qosClass"] == "Guaranteed"


@pytest.mark.usefixtures("inject")
def test_a_burstable_vmis_pod_stays_burstable(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(_with_resources("small", namespace, {"requests": {"memory": "128Mi"}}))
    pod = _launcher_pod(kubectl, namespace, "small")
    assert _ours(pod)["resources"]["limits"] == {"cpu": "200m", "memory": "64M"}
    assert pod["status"]["qosClass"] == "Burstable"


def test_a_pod_with_a_wrong_sidecar_image_is_still_created(
    inject: AdmissionLab, kubectl: Kubectl, namespace: str
) -> None:
    """The API server stores the pod with our container naming an image nobody can pull: the pod
    exists and is scheduled like any other. With no kubelet here, the pull failure itself
    (ImagePullBackOff on our container, which virt-controller reports on the VMI and which keeps
    the VMI from being handed to virt-handler, docs/kubevirt-facts.md I3) is not shown."""
    assert inject.webhook is not None
    inject.webhook.restart(sidecar_image=WRONG_IMAGE)
    kubectl.apply(vmi_manifest("wrong-image", namespace))
    pod = _launcher_pod(kubectl, namespace, "wrong-image")
    assert _ours(pod)["image"] == WRONG_IMAGE
    assert pod["status"]["phase"] == "Pending"  # stored and waiting for a node, as any new pod
    rendered = render_launcher_pod(kubectl.get("vmi", "wrong-image", namespace=namespace))["spec"]["containers"][0]
    compute = next(c for c in pod["spec"]["containers"] if c["name"] == "compute")
    assert (compute["image"], compute["volumeMounts"]) == (rendered["image"], rendered["volumeMounts"])


def test_with_the_sidecar_gate_off_auto_makes_a_bridge_vmi_migratable_by_injection(
    lab: AdmissionLab, kubectl: Kubectl, namespace: str
) -> None:
    lab.set_sidecar_gate(enabled=False)
    try:
        # The fake virt-api refuses hook sidecars with the gate off (facts K6): we add none, so it is stored.
        result = kubectl.apply(vmi_manifest("gateless", namespace))
        assert "delivery inject" in result.stderr and "non-migratable" not in result.stderr
        stored = kubectl.get("vmi", "gateless", namespace=namespace)
        ann = user_annotations(stored)
        assert ann[ALLOW_POD_BRIDGE_MIGRATION] == "true"
        assert ann[DEFAULT_KEYS.delivery] == "inject"
        assert HOOK_SIDECARS not in ann
        assert stored["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"]
        pod = _launcher_pod(kubectl, namespace, "gateless")
        assert _ours(pod)["image"] == SIDECAR_IMAGE
        # The pod carries what the injected process reads: our record and the expected MACs.
        assert pod["metadata"]["annotations"][DEFAULT_KEYS.macs] == ann[DEFAULT_KEYS.macs]
        # A migration of it is no stranding one: no warning.
        moved = kubectl.apply(migration("move-gateless", namespace, vmi="gateless"))
        assert "bridge-migration" not in moved.stderr
    finally:
        lab.set_sidecar_gate(enabled=True)
