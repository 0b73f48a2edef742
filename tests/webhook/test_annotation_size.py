"""Our annotations never push an object past Kubernetes' limit on annotations (issue 25).

The API server refuses an object whose annotations add up (each key's and value's length in bytes)
to more than 262144 bytes (256 KiB; docs/kubevirt-facts.md K10), after every mutating webhook ran:
with our patch applied a VMI that fitted would be refused, and failurePolicy Ignore does not help
(the webhook answered). When ours would not fit, the object is admitted as written, with a warning.
Launcher pods carry the VMI's annotations (virt-controller copies them) and ours on top: a first pod
is admitted as it is, with a warning; a migration target pod on the fail-closed route is refused, as
it would get no working fixer without ours (the migration then waits, docs/kubevirt-facts.md L8).
"""

from __future__ import annotations

import asyncio
from typing import Any

import jsonpatch

from tests.webhook.kubevirt_api import FakeKubeVirtApi, admit_once, patch_of
from tests.webhook.launcher_pods import IMAGE, launcher_pod
from tests.webhook.vmis import vmi
from webhook.config import WebhookConfig

LIMIT = 262144
VMIS = "mutate/virtualmachineinstances"
VMS = "mutate/virtualmachines"
CONFIG = WebhookConfig(dev=True)
FILLER = "example.org/notes"


def size(annotations: dict[str, str]) -> int:
    """As the API server counts (apimachinery ValidateAnnotationsSize): bytes of keys and values."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())


def filled_to(total: int, **extra: str) -> dict[str, str]:
    """``extra`` plus one filler annotation, ``total`` bytes in all."""
    annotations = dict(extra)
    annotations[FILLER] = "x" * (total - size(annotations) - len(FILLER))
    assert size(annotations) == total
    return annotations


def admit(endpoint: str, obj: dict[str, Any], gates: list[str]) -> dict[str, Any]:
    return asyncio.run(admit_once(CONFIG, FakeKubeVirtApi(gates=gates), endpoint, obj))


def ours_in_bytes(gates: list[str]) -> int:
    """What our patch adds to a small VMI's annotations, in bytes."""
    small = vmi(annotations={FILLER: "x"})
    patched = jsonpatch.apply_patch(small, patch_of(admit(VMIS, small, gates)))
    return size(patched["metadata"]["annotations"]) - size(small["metadata"]["annotations"])


def test_a_vmi_with_nearly_256_kib_of_annotations_is_left_as_written_with_a_warning() -> None:
    for gates in (["Sidecar"], []):  # our hook sidecar entry, or the inject record
        obj = vmi(annotations=filled_to(LIMIT - ours_in_bytes(gates) // 2))
        response = admit(VMIS, obj, gates)
        assert response["allowed"] is True
        assert patch_of(response) == [], "with our patch the API server would refuse this VMI"
        [warning] = response["warnings"]
        assert warning.startswith("bridge-migration: VMI demo/web-1")
        assert "262144" in warning and "stays non-migratable" in warning


def test_a_vmi_whose_annotations_fit_with_ours_to_the_byte_is_patched() -> None:
    for gates in (["Sidecar"], []):
        obj = vmi(annotations=filled_to(LIMIT - ours_in_bytes(gates)))
        response = admit(VMIS, obj, gates)
        patched = jsonpatch.apply_patch(obj, patch_of(response))
        assert size(patched["metadata"]["annotations"]) == LIMIT
        assert not any("262144" in w for w in response.get("warnings", []))


def test_multibyte_values_are_counted_in_bytes() -> None:
    annotations = filled_to(LIMIT - ours_in_bytes(["Sidecar"]))  # fits to the byte, in ASCII
    assert patch_of(admit(VMIS, vmi(annotations=annotations), ["Sidecar"]))
    annotations[FILLER] = annotations[FILLER][:-1] + "é"  # as many characters, one byte more
    assert patch_of(admit(VMIS, vmi(annotations=annotations), ["Sidecar"])) == []


def test_a_vm_whose_template_annotations_would_not_fit_is_left_as_written() -> None:
    """The VMI virt-controller makes from the template carries the template's annotations."""
    template = vmi(annotations=filled_to(LIMIT - 16))
    vm = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "web-1", "namespace": "demo"},
        "spec": {"template": {"metadata": {"annotations": template["metadata"]["annotations"]},
                              "spec": template["spec"]}},
    }  # fmt: skip
    response = admit(VMS, vm, ["Sidecar"])
    assert patch_of(response) == []
    assert "VM demo/web-1" in response["warnings"][0] and "262144" in response["warnings"][0]


# --- launcher pods: they carry the VMI's annotations (virt-controller copies them) and ours --------

PODS = "mutate/pods"
TARGETS = "mutate/migration-target-pods"
HINT = "cni.projectcalico.org/hwAddr"
POD_CONFIG = WebhookConfig(dev=True, sidecar_image=IMAGE, cni_mac_annotation=HINT)
MACS = {"bridge-migration.kubevirt.io/macs": '{"default":"02:00:00:00:00:01"}'}


def pod_filled_to(total: int, *, target: bool) -> dict[str, Any]:
    """A launcher pod with our hook sidecar and the VMI's MACs, ``total`` bytes of annotations."""
    pod = launcher_pod(target=target, annotations={**MACS, FILLER: ""})
    annotations = pod["metadata"]["annotations"]
    annotations[FILLER] = "x" * (total - size(annotations))
    assert size(annotations) == total
    return pod


def admit_pod(endpoint: str, pod: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(admit_once(POD_CONFIG, FakeKubeVirtApi(gates=["Sidecar"]), endpoint, pod))


def pod_ours_in_bytes(*, target: bool) -> int:
    """What our patch adds to a small pod's annotations (kubevirt-version; on a target the CNI hint)."""
    small = launcher_pod(target=target, annotations=MACS)
    patched = jsonpatch.apply_patch(small, patch_of(admit_pod(PODS, small)))
    return size(patched["metadata"]["annotations"]) - size(small["metadata"]["annotations"])


def test_a_first_launcher_pod_whose_annotations_would_not_fit_with_ours_is_admitted_unchanged_with_a_warning() -> None:
    """Before, our kubevirt-version took it past the limit and the API server refused the pod: the
    VM could not start at all."""
    pod = pod_filled_to(LIMIT - pod_ours_in_bytes(target=False) // 2, target=False)
    response = admit_pod(PODS, pod)
    assert response["allowed"] is True
    assert patch_of(response) == [], "with our patch the API server would refuse this pod"
    [warning] = response["warnings"]
    assert warning.startswith("bridge-migration: launcher pod of VMI demo/web-1 admitted as it is, without ours: ")
    assert "262144" in warning and "bridge-migration.kubevirt.io/kubevirt-version" in warning


def test_a_target_pod_whose_annotations_would_not_fit_with_ours_is_refused_on_the_target_route() -> None:
    """Without our annotations its fixer would not work (no pod-network MAC for the CNI, no
    KubeVirt version for the DHCP rule): the migration waits instead, the guest on its source."""
    pod = pod_filled_to(LIMIT - pod_ours_in_bytes(target=True) // 2, target=True)
    refused = admit_pod(TARGETS, pod)
    assert refused["allowed"] is False and patch_of(refused) == []
    message = refused["status"]["message"]
    assert message.startswith("bridge-migration: migration target pod of VMI demo/web-1 refused: its annotations take ")
    assert "over Kubernetes' limit of 262144 bytes in all" in message and HINT in message
    assert "the migration stays Pending" in message and "keeps running on its source" in message
    # /mutate/pods (a target pod of a VMI whose fixer is not in the pod: delivery node) admits it unchanged.
    admitted = admit_pod(PODS, pod)
    assert admitted["allowed"] is True and patch_of(admitted) == []
    assert any("262144" in w for w in admitted["warnings"])


def test_launcher_pods_whose_annotations_fit_with_ours_to_the_byte_are_patched_on_both_routes() -> None:
    for target, endpoints in ((False, [PODS]), (True, [PODS, TARGETS])):
        pod = pod_filled_to(LIMIT - pod_ours_in_bytes(target=target), target=target)
        for endpoint in endpoints:
            response = admit_pod(endpoint, pod)
            patched = jsonpatch.apply_patch(pod, patch_of(response))
            assert size(patched["metadata"]["annotations"]) == LIMIT, endpoint
            assert not any("262144" in w for w in response.get("warnings", []))
