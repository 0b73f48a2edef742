"""Migration target pods of VMIs whose fixer the pod webhook delivers fail closed, through the real
kube-apiserver and the chart's own webhook configuration (issue 25).

The pods are rendered by kubelab's fake virt-controller (kubelab/fake_virt_controller.py, not
KubeVirt) from the VMIs our webhook stored, and created the way virt-controller's migration
controller creates them. What virt-controller then does with a refused target pod (it keeps the
migration Pending and creates the pod again, with backoff, while the source runs on;
docs/kubevirt-facts.md L8, L9) is KubeVirt's and is not played here: kubelab has no migration
controller.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from bridge_migration_contract import (
    DEFAULT_KEYS,
    HOOK_SIDECARS,
    INJECTED_CONTAINER,
    LIBVIRT_RUNTIME_PATH,
    LIBVIRT_RUNTIME_VOLUME,
    PODINFO_VOLUME,
)
from kubelab.fake_virt_controller import render_launcher_pod
from kubelab.kubectl import Kubectl, to_yaml
from kubelab.lab import RELEASE, SIDECAR_IMAGE, AdmissionLab
from tests.kube.conftest import user_annotations, vmi_manifest

pytestmark = pytest.mark.kube

TARGET_WEBHOOK = "migration-target-pods.bridge-migration.kubevirt.io"
MIGRATION = {"name": "move-it", "uid": "0b7d3c52-0000-4000-8000-00000000000a"}


@pytest.fixture
def chart_sidecar_image(lab: AdmissionLab) -> Iterator[str]:
    """The webhook runs with the sidecar image the chart's own Deployment hands it, so the chart's
    webhook configuration (rendered from the same values) knows our container, as in an install.
    The lab's default sidecar image is a local name the chart's default values do not carry. At the
    end the webhook runs again (restarted, whether a test stopped it or not) with the lab's image."""
    assert lab.webhook is not None
    (deployment,) = lab.render("templates/deployment.yaml")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (image,) = [a.split("=", 1)[1] for a in container["args"] if a.startswith("--sidecar-image=")]
    assert deployment["metadata"]["name"] == RELEASE
    lab.webhook.restart(sidecar_image=image)
    try:
        yield image
    finally:
        lab.webhook.restart(sidecar_image=SIDECAR_IMAGE)


def _stored_vmi(kubectl: Kubectl, namespace: str, name: str, **kwargs: Any) -> dict[str, Any]:
    kubectl.apply(vmi_manifest(name, namespace, **kwargs))
    return kubectl.get("vmi", name, namespace=namespace)


def _pod(vmi: dict[str, Any], name: str, *, target: bool) -> dict[str, Any]:
    return render_launcher_pod(vmi, name=name, migration=MIGRATION if target else None)


def _create(kubectl: Kubectl, pod: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """``kubectl create``, as virt-controller creates a pod (a POST; no apply bookkeeping)."""
    return kubectl.run("create", "-f", "-", stdin=to_yaml(pod), check=False)


def _exists(kubectl: Kubectl, namespace: str, name: str) -> bool:
    return kubectl.run("get", "pod", name, f"--namespace={namespace}", check=False).returncode == 0


def _has_fixer(pod: dict[str, Any], delivery: str, image: str) -> bool:
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    if delivery == "inject":
        # A regular container or a native sidecar (an init container): where is webhook/injected.py's.
        every = [*pod["spec"]["containers"], *(pod["spec"].get("initContainers") or [])]
        return any(c["name"] == INJECTED_CONTAINER and c["image"] == image for c in every)
    sidecar = containers["hook-sidecar-0"]
    mounts = {m["name"]: m["mountPath"] for m in sidecar.get("volumeMounts") or []}
    return sidecar["image"] == image and mounts.get(LIBVIRT_RUNTIME_VOLUME) == LIBVIRT_RUNTIME_PATH


def _managed_vmi(kubectl: Kubectl, namespace: str, name: str, delivery: str) -> dict[str, Any]:
    annotations = {DEFAULT_KEYS.delivery: "inject"} if delivery == "inject" else None
    vmi = _stored_vmi(kubectl, namespace, name, annotations=annotations)
    stored = user_annotations(vmi)
    if delivery == "hook":
        assert HOOK_SIDECARS in stored
    else:
        assert stored[DEFAULT_KEYS.delivery] == "inject" and HOOK_SIDECARS not in stored
    return vmi


@pytest.mark.parametrize("delivery", ["hook", "inject"])
def test_while_the_webhook_is_down_a_target_pod_waits_and_once_it_is_back_gets_its_fixer(
    chart_sidecar_image: str, lab: AdmissionLab, kubectl: Kubectl, namespace: str, delivery: str
) -> None:
    assert lab.webhook is not None
    vmi = _managed_vmi(kubectl, namespace, "web", delivery)
    lab.webhook.stop()

    # The migration's target pod is refused: what virt-controller gets back (and records on the VMI
    # as a FailedCreate event, "Error creating pod: ..."), and what kubectl shows for the same POST.
    refused = _create(kubectl, _pod(vmi, "virt-launcher-web-target", target=True))
    assert refused.returncode != 0
    assert "Internal error occurred" in refused.stderr
    assert f'failed calling webhook "{TARGET_WEBHOOK}"' in refused.stderr
    assert not _exists(kubectl, namespace, "virt-launcher-web-target")

    # A VM starting is never held: its first pod is created, without a fixer (fail-open, as before).
    first = _create(kubectl, _pod(vmi, "virt-launcher-web-first", target=False))
    assert first.returncode == 0, first.stderr
    stored_first = kubectl.get("pod", "virt-launcher-web-first", namespace=namespace)
    assert not _has_fixer(stored_first, delivery, chart_sidecar_image)

    # virt-controller creates the target pod again; once the webhook is back it gets its fixer.
    lab.webhook.start()
    again = _create(kubectl, _pod(vmi, "virt-launcher-web-target", target=True))
    assert again.returncode == 0, again.stderr
    target = kubectl.get("pod", "virt-launcher-web-target", namespace=namespace)
    assert _has_fixer(target, delivery, chart_sidecar_image)
    assert PODINFO_VOLUME in {v["name"] for v in target["spec"]["volumes"]}


def test_while_the_webhook_is_down_only_target_pods_of_vmis_with_a_pod_fixer_are_refused(
    chart_sidecar_image: str, lab: AdmissionLab, kubectl: Kubectl, namespace: str
) -> None:
    """A VMI we do not manage never waits on our outage, nor does one whose fixer is the node agent
    (delivery node: nothing of the fixer comes from the pod patch)."""
    assert lab.webhook is not None
    managed = _managed_vmi(kubectl, namespace, "ours", "hook")
    masquerade = _stored_vmi(kubectl, namespace, "masq", binding="masquerade")
    assert user_annotations(masquerade) == {}
    node = _stored_vmi(kubectl, namespace, "node-vm", annotations={DEFAULT_KEYS.delivery: "node"})
    assert user_annotations(node)[DEFAULT_KEYS.delivery] == "node"
    assert HOOK_SIDECARS not in user_annotations(node)
    lab.webhook.stop()

    refused = _create(kubectl, _pod(managed, "virt-launcher-ours-target", target=True))
    assert f'failed calling webhook "{TARGET_WEBHOOK}"' in refused.stderr
    for vmi, pod_name in ((masquerade, "virt-launcher-masq-target"), (node, "virt-launcher-node-vm-target")):
        created = _create(kubectl, _pod(vmi, pod_name, target=True))
        assert created.returncode == 0, created.stderr
        assert _exists(kubectl, namespace, pod_name)
