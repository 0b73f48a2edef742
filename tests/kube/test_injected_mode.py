"""Delivery inject through kube-apiserver: our VMI webhook, the fake virt-api behind it, the fake
virt-controller rendering the launcher pod (kubelab's stand-ins, not KubeVirt), and our pod webhook
adding the fixer container. No kubelet runs here: what the API server stores and computes
(``status.qosClass``, Pod Security admission) is real; what a kubelet would report once the
containers ran, crashed or ended comes from kubelab's fake kubelet (kubelab/fake_kubelet.py),
written to the pod's status through the API server and judged by the fake virt-controller's
readiness rules (both stand-ins, each rule from the Kubernetes and KubeVirt source)."""

from __future__ import annotations

import copy
import json
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
from kubelab.fake_kubelet import Outcome, pod_status
from kubelab.fake_virt_controller import (
    EPHEMERAL_PROVISIONING,
    active_pods,
    is_pod_ready,
    render_launcher_pod,
    vmi_ready,
)
from kubelab.kubectl import Kubectl, to_yaml
from kubelab.lab import SIDECAR_IMAGE, AdmissionLab
from tests.kube.conftest import user_annotations, vmi_manifest
from tests.kube.test_launcher_pods import MIGRATION
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


def _everything(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]


def _ours(pod: dict[str, Any]) -> dict[str, Any]:
    [container] = [c for c in _everything(pod) if c["name"] == INJECTED_CONTAINER]
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
    # A native sidecar, after KubeVirt's own (guest-console-log); the API server keeps it so.
    assert [c["name"] for c in pod["spec"]["containers"]] == ["compute"]
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["guest-console-log", INJECTED_CONTAINER]
    ours = _ours(pod)
    assert ours["restartPolicy"] == "Always"
    assert ours["image"] == SIDECAR_IMAGE
    assert ours["command"] == ["python", "-m", "sidecar", "serve", "--delivery", "inject"]
    assert ours["resources"]["requests"] == ours["resources"]["limits"] == {"cpu": "200m", "memory": "64M"}
    sc = ours["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"], sc["runAsNonRoot"]) == (107, 107, True)
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert {m["name"]: (m["mountPath"], m["readOnly"]) for m in ours["volumeMounts"]} == {
        LIBVIRT_RUNTIME_VOLUME: (LIBVIRT_RUNTIME_PATH, True),
        PODINFO_VOLUME: (PODINFO_DIR, True),
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


# --- (A) the temporary pod of a WaitForFirstConsumer volume -------------------------------------


@pytest.mark.usefixtures("inject")
def test_a_temporary_wait_for_first_consumer_pod_gets_no_fixer(kubectl: Kubectl, namespace: str) -> None:
    """virt-controller's temporary pod (facts I13) carries the VMI's annotations, our delivery record
    included, but no VM ever runs in it: compute echoes and exits. It gets no container of ours,
    and the launcher pod created after it does."""
    kubectl.apply(vmi_manifest("wffc", namespace))
    vmi = kubectl.get("vmi", "wffc", namespace=namespace)
    kubectl.apply(render_launcher_pod(vmi, name="virt-launcher-wffc-temp", temp_pod=True))
    temp = kubectl.get("pod", "virt-launcher-wffc-temp", namespace=namespace)
    assert temp["metadata"]["annotations"][EPHEMERAL_PROVISIONING] == "true"
    assert temp["metadata"]["annotations"][DEFAULT_KEYS.delivery] == "inject"
    assert INJECTED_CONTAINER not in [c["name"] for c in _everything(temp)]
    assert _ours(_launcher_pod(kubectl, namespace, "wffc"))["image"] == SIDECAR_IMAGE


# --- (B) a native sidecar: what the kubelet and virt-controller make of it ----------------------


def _report(kubectl: Kubectl, namespace: str, pod: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """Play the kubelet: write ``status`` to the pod's status subresource; the pod as stored."""
    name = pod["metadata"]["name"]
    kubectl.run(
        "patch",
        "pod",
        name,
        f"--namespace={namespace}",
        "--subresource=status",
        "--type=merge",
        f"--patch={json.dumps({'status': status})}",
    )
    return kubectl.get("pod", name, namespace=namespace)


@pytest.mark.usefixtures("inject")
def test_a_crash_of_our_container_leaves_the_vm_ready_once_the_kubelet_restarted_it(
    kubectl: Kubectl, namespace: str
) -> None:
    """Our process crashed or was OOM-killed. The pod's restartPolicy is Never (facts H3), but a
    native sidecar is restarted by the kubelet: the VMI's Ready condition, copied from the pod's
    (facts I8), is False during the back-off and True again once it runs. virt-controller's own
    readiness check (IsPodReady, facts I7) never looks at it."""
    kubectl.apply(vmi_manifest("crashy", namespace))
    pod = _launcher_pod(kubectl, namespace, "crashy")
    running = _report(kubectl, namespace, pod, pod_status(pod))
    assert is_pod_ready(running) and vmi_ready(running)

    backoff = _report(kubectl, namespace, pod, pod_status(pod, {INJECTED_CONTAINER: "crashed"}, backoff="in-backoff"))
    assert is_pod_ready(backoff), "virt-controller keeps handing this pod to virt-handler"
    assert not vmi_ready(backoff)  # the restart back-off: 10 s, doubling up to 5 min on repeated crashes

    restarted = _report(kubectl, namespace, pod, pod_status(pod, {INJECTED_CONTAINER: "crashed"}))
    [ours] = [s for s in restarted["status"]["initContainerStatuses"] if s["name"] == INJECTED_CONTAINER]
    assert ours["restartCount"] == 1 and "running" in ours["state"]
    assert restarted["status"]["phase"] == "Running"
    assert is_pod_ready(restarted) and vmi_ready(restarted)


@pytest.mark.usefixtures("inject")
def test_a_target_pod_whose_compute_died_ends_and_leaves_later_migrations_free(
    kubectl: Kubectl, namespace: str
) -> None:
    """A migration target's compute dies before it starts virtqemud; our process, which waits for
    that socket, is still running. The kubelet stops a native sidecar once the regular containers
    have ended, so the pod fails; virt-controller then counts one active pod for the VMI, not two,
    and creates the next migration's target pod (handleTargetPodCreation, facts I11)."""
    kubectl.apply(vmi_manifest("moving", namespace))
    vmi = kubectl.get("vmi", "moving", namespace=namespace)
    source = _launcher_pod(kubectl, namespace, "moving")
    source = _report(kubectl, namespace, source, pod_status(source))
    kubectl.apply(render_launcher_pod(vmi, name="virt-launcher-moving-target", migration=MIGRATION))
    target = kubectl.get("pod", "virt-launcher-moving-target", namespace=namespace)

    target = _report(kubectl, namespace, target, pod_status(target, {"compute": "crashed"}))
    assert target["status"]["phase"] == "Failed"
    [ours] = [s for s in target["status"]["initContainerStatuses"] if s["name"] == INJECTED_CONTAINER]
    assert "terminated" in ours["state"]
    assert active_pods([source, target], vmi) == 1


@pytest.mark.parametrize("version", ["v1.5.0", "v1.9.0"])
def test_kubevirts_readiness_rules_as_the_stand_ins_apply_them(version: str) -> None:
    """The stand-ins themselves, on a pod of both shapes (no API server): a regular container that
    crashed in a Never pod stays down and holds the pod NotReady and the VMI with it; a native
    sidecar is not a container IsPodReady reads (facts I7). v1.5's guest-console-log is a regular
    container, so it must be Ready there."""
    vmi = {"metadata": {"name": "v", "namespace": "n", "uid": "u"}, "spec": {"domain": {}}}
    pod = render_launcher_pod(vmi, kubevirt_version=version)
    regular = {"name": "regular-helper", "image": "example.org/helper:1"}
    pod["spec"]["containers"].append(regular)
    crashed = {**pod, "status": pod_status(pod, {"regular-helper": "crashed"})}
    assert crashed["status"]["phase"] == "Running"  # compute runs on: the pod is not down
    assert not is_pod_ready(crashed) and not vmi_ready(crashed)
    console = {**pod, "status": pod_status(pod, {"guest-console-log": "crashed"}, backoff="in-backoff")}
    assert is_pod_ready(console) is (version != "v1.5.0")
    assert not vmi_ready(console)
    # virt-launcher exits; so do the other regular containers (v1.5's virt-tail with it).
    ended: dict[str, Outcome] = {name: "completed" for name in ("compute", "regular-helper", "guest-console-log")}
    done = {**pod, "status": pod_status(pod, ended)}
    assert done["status"]["phase"] == "Succeeded" and active_pods([done], vmi) == 0


# --- (C) the container's hardening: Pod Security restricted, through the API server -------------


def _psa_namespace(kubectl: Kubectl, name: str) -> None:
    kubectl.create_namespace(
        name,
        labels={
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        },
    )


def _pod_of(container: dict[str, Any], launcher: dict[str, Any], *, namespace: str, name: str) -> dict[str, Any]:
    """A pod with ``container`` as its native sidecar, the launcher's pod security context and the
    two volumes it mounts, and a regular container with the same security context."""
    volumes = [v for v in launcher["spec"]["volumes"] if v["name"] in (LIBVIRT_RUNTIME_VOLUME, PODINFO_VOLUME)]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "securityContext": launcher["spec"]["securityContext"],
            "initContainers": [container],
            "containers": [
                {
                    "name": "idle",
                    "image": "registry.k8s.io/pause:3.10",
                    "securityContext": copy.deepcopy(container["securityContext"]),
                }
            ],
            "volumes": volumes,
        },
    }


@pytest.mark.usefixtures("inject")
def test_the_injected_container_passes_pod_security_restricted(kubectl: Kubectl, namespace: str) -> None:
    """Our container as the webhook stored it, in a namespace that enforces Pod Security
    ``restricted``: admitted. KubeVirt's own compute container is not restricted-clean (no seccomp
    profile unless the cluster configures one), so the launcher pod itself is not the subject; a
    namespace that only warns names compute, never our container."""
    kubectl.apply(vmi_manifest("hardened", namespace))
    launcher = _launcher_pod(kubectl, namespace, "hardened")
    ours = _ours(launcher)
    _psa_namespace(kubectl, "inject-psa-restricted")
    pod = _pod_of(ours, launcher, namespace="inject-psa-restricted", name="ours")
    admitted = kubectl.run("create", "--dry-run=server", "-f", "-", stdin=to_yaml(pod), check=False)
    assert admitted.returncode == 0, admitted.stderr
    # The check is live: the same container without a seccomp profile is refused.
    weaker = copy.deepcopy(pod)
    del weaker["spec"]["initContainers"][0]["securityContext"]["seccompProfile"]
    refused = kubectl.run("create", "--dry-run=server", "-f", "-", stdin=to_yaml(weaker), check=False)
    assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr
    assert f'container "{INJECTED_CONTAINER}" must set securityContext.seccompProfile' in refused.stderr

    # The whole launcher pod in a namespace that warns: only KubeVirt's containers are named.
    kubectl.run("label", "namespace", namespace, "pod-security.kubernetes.io/warn=restricted")
    vmi = kubectl.get("vmi", "hardened", namespace=namespace)
    warned = kubectl.apply(render_launcher_pod(vmi, name="virt-launcher-hardened-warned"))
    assert 'would violate PodSecurity "restricted:latest"' in warned.stderr
    assert INJECTED_CONTAINER not in warned.stderr.split("would violate PodSecurity", 1)[1], warned.stderr
