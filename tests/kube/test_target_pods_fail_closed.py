"""Migration target pods of VMIs whose fixer the pod webhook delivers fail closed, through the real
kube-apiserver and the chart's own webhook configuration (issue 25).

The pods are rendered by kubelab's fake virt-controller (kubelab/fake_virt_controller.py, not
KubeVirt) from the VMIs our webhook stored, and created the way virt-controller's migration
controller creates them. What virt-controller then does with a refused target pod (it keeps the
migration Pending and creates the pod again, with backoff, while the source runs on;
docs/kubevirt-facts.md L8, L9) is KubeVirt's and is not played here: kubelab has no migration
controller.

Refused are target pods the webhook cannot be called for (the entry's failurePolicy), and those its
route, /mutate/migration-target-pods, refuses itself: when it runs into its own deadline, when the
pod cannot get a working fixer, when our annotations would take it past Kubernetes' limit.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
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
from tests.webhook.server import hung_apiserver

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


# --- the webhook answers, but the target pod cannot get a working fixer: refused, saying why --------
# (The chart's entry fails closed only when the webhook cannot be called; these are refusals of the
# webhook's own route, /mutate/migration-target-pods. Before it, each such target pod was created
# without its fixer, with a warning that only virt-controller's log saw.)

DENIED = f'admission webhook "{TARGET_WEBHOOK}" denied the request: bridge-migration: '
WAITS = (
    "the migration stays Pending and KubeVirt creates the target pod again with backoff, "
    "while the VM keeps running on its source"
)


def _without_libvirt_runtime(pod: dict[str, Any]) -> dict[str, Any]:
    """What a launcher pod looks like after something took the volume away (compute's mount with it)."""
    pod["spec"]["volumes"] = [v for v in pod["spec"]["volumes"] if v["name"] != LIBVIRT_RUNTIME_VOLUME]
    for container in pod["spec"]["containers"]:
        mounts = container.get("volumeMounts") or []
        container["volumeMounts"] = [m for m in mounts if m["name"] != LIBVIRT_RUNTIME_VOLUME]
    return pod


NO_FIXER = {
    # case: the VMI's delivery, the reason the refusal gives
    "no-libvirt-runtime": ("hook", "the pod has no libvirt-runtime volume, so the fixer could not reach libvirt"),
    "root-launcher": ("inject", "it is a root virt-launcher pod, where the injected fixer cannot reach libvirt"),
}


@pytest.mark.parametrize("case", sorted(NO_FIXER))
def test_a_target_pod_the_webhook_cannot_give_a_fixer_is_refused_with_the_reason_and_a_first_pod_created(
    chart_sidecar_image: str, kubectl: Kubectl, namespace: str, case: str
) -> None:
    delivery, reason = NO_FIXER[case]
    vmi = _managed_vmi(kubectl, namespace, "web", delivery)

    def pod(name: str, *, target: bool) -> dict[str, Any]:
        migration = MIGRATION if target else None
        if case == "root-launcher":
            return render_launcher_pod(vmi, name=name, migration=migration, non_root=False)
        return _without_libvirt_runtime(render_launcher_pod(vmi, name=name, migration=migration))

    # What virt-controller gets back and records on the VMI (FailedCreate, "Error creating pod: ...").
    refused = _create(kubectl, pod("virt-launcher-web-target", target=True))
    assert refused.returncode != 0
    assert DENIED + f"migration target pod of VMI {namespace}/web refused: {reason}" in refused.stderr
    assert WAITS in refused.stderr
    assert f"`kubectl delete vmim {MIGRATION['name']} -n {namespace}` cancels the migration" in refused.stderr
    assert not _exists(kubectl, namespace, "virt-launcher-web-target")

    # A VM starting is never held: the same pod as a first pod is created, with the warning as before.
    first = _create(kubectl, pod("virt-launcher-web-first", target=False))
    assert first.returncode == 0, first.stderr
    assert "Warning: bridge-migration: " in first.stderr
    assert not _has_fixer(
        kubectl.get("pod", "virt-launcher-web-first", namespace=namespace), delivery, chart_sidecar_image
    )


@contextlib.contextmanager
def _webhook_reading_a_hung_api(lab: AdmissionLab, tmp_path: Path) -> Iterator[None]:
    """The webhook restarted against a NAMED FAKE hung API server (tests/webhook/server.py): every
    read it makes hangs, so its own one-second deadline ends every review that reads. Restored after."""
    assert lab.webhook is not None
    saved = dict(lab.webhook.options)
    with hung_apiserver(tmp_path) as (kubeconfig, _):
        try:
            lab.webhook.restart(kubeconfig=str(kubeconfig), request_deadline="1", api_timeout="30")
            yield
        finally:
            lab.webhook.stop()
            lab.webhook.options.clear()
            lab.webhook.options.update(saved)
            lab.webhook.start()


def test_a_target_pod_the_webhook_cannot_answer_in_time_is_refused_and_a_first_pod_still_created(
    chart_sidecar_image: str, lab: AdmissionLab, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    """Before, the server's own deadline admitted the target pod unchanged (its fail-open stance)
    and it ran without a working fixer: only an unreachable webhook held the migration."""
    vmi = _managed_vmi(kubectl, namespace, "web", "hook")
    with _webhook_reading_a_hung_api(lab, tmp_path):
        refused = _create(kubectl, _pod(vmi, "virt-launcher-web-target", target=True))
        assert refused.returncode != 0
        assert DENIED + "no answer within 1.0s; migration target pod refused" in refused.stderr
        assert WAITS in refused.stderr
        # A VM starting is not held: its first pod needs no read (the gate reader's attempt is
        # under way in the background and is not waited for), so it is decided and patched in time.
        first = _create(kubectl, _pod(vmi, "virt-launcher-web-first", target=False))
        assert first.returncode == 0, first.stderr
    assert not _exists(kubectl, namespace, "virt-launcher-web-target")
    assert _has_fixer(kubectl.get("pod", "virt-launcher-web-first", namespace=namespace), "hook", chart_sidecar_image)


# --- annotations near Kubernetes' limit (262144 bytes in all, docs/kubevirt-facts.md K10) ----------

LIMIT = 262144
FILLER = "example.org/notes"


def _size(annotations: dict[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())


def _near_the_limit_vmi(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    """A hook VMI, stored, whose target pod's annotations come to 1 byte under the limit as
    virt-controller renders them: so the VMI itself fits with ours, and so does the target pod
    without ours. ``kubectl create``: apply would copy the whole manifest into an annotation."""
    manifest = vmi_manifest("web", namespace, annotations={FILLER: "x"})
    probe = json.loads(
        kubectl.run("create", "--dry-run=server", "-o", "json", "-f", "-", stdin=to_yaml(manifest)).stdout
    )
    target = _size(_pod(probe, "p", target=True)["metadata"]["annotations"])
    manifest["metadata"]["annotations"][FILLER] = "x" * (1 + LIMIT - 1 - target)
    kubectl.run("create", "-f", "-", stdin=to_yaml(manifest))
    vmi = kubectl.get("vmi", "web", namespace=namespace)
    assert HOOK_SIDECARS in vmi["metadata"]["annotations"]  # made migratable: the VMI fits with ours
    return vmi


def test_a_vmi_near_the_annotation_limit_starts_without_our_pod_annotations_and_its_target_pod_is_refused(
    chart_sidecar_image: str, kubectl: Kubectl, namespace: str
) -> None:
    """Before, our kubevirt-version took the first pod past the limit: the API server refused it
    ("Too long: may not be more than 262144 bytes") after we allowed it, and the VM never started."""
    vmi = _near_the_limit_vmi(kubectl, namespace)
    first_pod, target_pod = (
        _pod(vmi, "virt-launcher-web-first", target=False),
        _pod(vmi, "virt-launcher-web-t", target=True),
    )
    version_key = DEFAULT_KEYS.kubevirt_version
    assert _size(target_pod["metadata"]["annotations"]) == LIMIT - 1
    assert _size(first_pod["metadata"]["annotations"]) + len(version_key) + len("v1.9.0") > LIMIT

    first = _create(kubectl, first_pod)
    assert first.returncode == 0, first.stderr
    assert (
        f"Warning: bridge-migration: launcher pod of VMI {namespace}/web admitted as it is, without ours"
        in first.stderr
    )
    stored = kubectl.get("pod", "virt-launcher-web-first", namespace=namespace)
    assert version_key not in stored["metadata"]["annotations"]

    refused = _create(kubectl, target_pod)
    assert refused.returncode != 0
    assert DENIED + f"migration target pod of VMI {namespace}/web refused: its annotations take" in refused.stderr
    assert "over Kubernetes' limit of 262144 bytes in all" in refused.stderr and WAITS in refused.stderr
