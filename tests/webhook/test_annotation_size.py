"""Our annotations never push an object past Kubernetes' limit on annotations (issue 25).

The API server refuses an object whose annotations add up (each key's and value's length in bytes)
to more than 262144 bytes (256 KiB; docs/kubevirt-facts.md K10), after every mutating webhook ran:
with our patch applied a VMI that fitted would be refused, and failurePolicy Ignore does not help
(the webhook answered). When ours would not fit, the object is admitted as written, with a warning.
"""

from __future__ import annotations

import asyncio
from typing import Any

import jsonpatch

from tests.webhook.kubevirt_api import FakeKubeVirtApi, admit_once, patch_of
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
