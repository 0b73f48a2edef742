"""A MAC no NIC can carry (multicast, broadcast, all zeros) is never pinned, copied to a target pod
or handed to the CNI: the VMI or VM that brings it is refused, saying which interface and why.

virt-api accepts such a MAC (it only checks that it parses, docs/kubevirt-facts.md K7, K9): the
refusal is ours. The reviews go through the real app; the API behind the pod webhook is a NAMED
FAKE (an ``httpx.MockTransport`` serving one VMI), as in test_api_paths.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import jsonpatch
import pytest

from kubelab.reviews import make_review
from tests.webhook.kubevirt_api import post_review
from tests.webhook.launcher_pods import IMAGE, launcher_pod
from tests.webhook.vmis import vmi
from webhook.config import WebhookConfig
from webhook.kube import ApiTarget, KubeClient, SidecarGateCache
from webhook.orchestration import Runtime

CNI_KEY = "cni.projectcalico.org/hwAddr"
MACS_KEY = "bridge-migration.kubevirt.io/macs"
MULTICAST = "01:00:5e:00:00:01"
BROADCAST = "ff:ff:ff:ff:ff:ff"
ZERO = "00:00:00:00:00:00"
_loop = asyncio.new_event_loop()
_TARGET = ApiTarget(server="https://apiserver.test", ssl_context=ssl.create_default_context())


def admit(path: str, review: Any, *, api_vmi: dict[str, Any] | None = None) -> dict[str, Any]:
    def serve(request: httpx.Request) -> httpx.Response:  # FAKE kube-apiserver: one VMI
        return httpx.Response(200, json=api_vmi) if api_vmi else httpx.Response(404, json={})

    kube = KubeClient(_TARGET, timeout_s=2, transport=httpx.MockTransport(serve))
    rt = Runtime(
        config=WebhookConfig(sidecar_image=IMAGE, cni_mac_annotation=CNI_KEY, delivery="inject"),
        gate=SidecarGateCache(None, forced=True, refresh_s=30),
        kube=kube,
    )

    async def post() -> dict[str, Any]:
        try:
            return await post_review(rt, path, review)
        finally:
            await kube.aclose()

    return _loop.run_until_complete(post())


def patched(review: Any, answer: dict[str, Any]) -> dict[str, Any]:
    obj = review["request"]["object"]
    if "patch" not in answer:
        return dict(obj)
    result: dict[str, Any] = jsonpatch.apply_patch(obj, json.loads(base64.b64decode(answer["patch"])))
    return result


def as_vm(template_vmi: dict[str, Any]) -> dict[str, Any]:
    template: dict[str, Any] = {"spec": template_vmi["spec"]}
    if "annotations" in template_vmi["metadata"]:
        template["metadata"] = {"annotations": template_vmi["metadata"]["annotations"]}
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "web-1", "namespace": "demo"},
        "spec": {"runStrategy": "Always", "template": template},
    }


@pytest.mark.parametrize(
    ("mac", "kind"), [(MULTICAST, "a multicast"), (BROADCAST, "the broadcast"), (ZERO, "the all-zero")]
)
def test_a_vmi_whose_bridge_interface_has_a_mac_no_nic_can_carry_is_refused(mac: str, kind: str) -> None:
    review = make_review(vmi(interfaces=[{"name": "default", "bridge": {}, "macAddress": mac}]))
    answer = admit("/mutate/virtualmachineinstances", review)
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 422
    assert answer["status"]["message"] == (
        f"bridge-migration: VMI demo/web-1: interface 'default': macAddress '{mac}' is {kind} MAC;"
        " an interface needs a unicast MAC (lowest bit of the first octet clear, not all zeros), e.g. 02:00:00:00:00:01"
    )


def test_a_vmi_whose_macs_annotation_would_pin_a_multicast_mac_is_refused() -> None:
    review = make_review(vmi(annotations={MACS_KEY: json.dumps({"default": MULTICAST})}))
    answer = admit("/mutate/virtualmachineinstances", review)
    assert answer["allowed"] is False
    assert (
        f"annotation {MACS_KEY}: interface 'default': '{MULTICAST}' is a multicast MAC" in answer["status"]["message"]
    )


def test_a_vmi_that_is_not_ours_keeps_its_multicast_mac_to_itself() -> None:
    """Opted out, or no bridge/macvtap interface: we pin and hand on nothing, so we refuse nothing."""
    opted_out = vmi(
        interfaces=[{"name": "default", "bridge": {}, "macAddress": MULTICAST}],
        annotations={"bridge-migration.kubevirt.io/enabled": "false"},
    )
    masquerade = vmi(interfaces=[{"name": "default", "masquerade": {}, "macAddress": MULTICAST}])
    for obj in (opted_out, masquerade):
        answer = admit("/mutate/virtualmachineinstances", make_review(obj))
        assert answer["allowed"] is True and "patch" not in answer


def test_a_vmi_with_a_unicast_mac_is_admitted_and_recorded_as_before() -> None:
    review = make_review(vmi(interfaces=[{"name": "default", "bridge": {}, "macAddress": "02:00:00:00:00:01"}]))
    answer = admit("/mutate/virtualmachineinstances", review)
    assert answer["allowed"] is True
    assert json.loads(patched(review, answer)["metadata"]["annotations"][MACS_KEY]) == {"default": "02:00:00:00:00:01"}


def test_a_vm_created_with_a_multicast_mac_in_its_template_is_refused() -> None:
    review = make_review(as_vm(vmi(interfaces=[{"name": "default", "bridge": {}, "macAddress": MULTICAST}])))
    answer = admit("/mutate/virtualmachines", review)
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 422
    assert answer["status"]["message"].startswith("bridge-migration: VM demo/web-1: interface 'default': macAddress")


def test_a_vm_update_that_brings_a_multicast_mac_is_refused_one_that_had_it_already_is_not_blocked() -> None:
    good = as_vm(vmi(interfaces=[{"name": "default", "bridge": {}, "macAddress": "02:00:00:00:00:01"}]))
    bad = as_vm(vmi(interfaces=[{"name": "default", "bridge": {}, "macAddress": MULTICAST}]))
    brought = admit("/mutate/virtualmachines", make_review(bad, operation="UPDATE", old=good))
    assert brought["allowed"] is False and "multicast" in brought["status"]["message"]
    # A VM from before the check: stopping it (or any edit) still works; it is left unchanged.
    halted = json.loads(json.dumps(bad))
    halted["spec"]["runStrategy"] = "Halted"
    kept = admit("/mutate/virtualmachines", make_review(halted, operation="UPDATE", old=bad))
    assert kept["allowed"] is True and "patch" not in kept
    assert kept["warnings"] == [
        f"bridge-migration: VM demo/web-1: interface 'default': macAddress '{MULTICAST}' is a multicast MAC;"
        " an interface needs a unicast MAC (lowest bit of the first octet clear, not all zeros),"
        " e.g. 02:00:00:00:00:01; VM left unchanged"
    ]


def test_a_target_pods_multicast_mac_is_not_handed_to_the_cni() -> None:
    pod = launcher_pod(target=True, annotations={MACS_KEY: json.dumps({"default": MULTICAST})})
    review = make_review(pod)
    answer = admit("/mutate/pods", review)
    assert answer["allowed"] is True
    assert CNI_KEY not in patched(review, answer)["metadata"]["annotations"]
    assert any(f"annotation {MACS_KEY} on the pod ignored" in w and "multicast" in w for w in answer["warnings"])


def test_a_multicast_mac_of_a_vmi_admitted_before_the_check_is_not_copied_to_its_target_pod() -> None:
    old_vmi = vmi(interfaces=[{"name": "default", "bridge": {}, "macAddress": MULTICAST}])
    review = make_review(launcher_pod(target=True))
    answer = admit("/mutate/pods", review, api_vmi=old_vmi)
    annotations = patched(review, answer)["metadata"]["annotations"]
    assert CNI_KEY not in annotations and MACS_KEY not in annotations
    assert any("interface 'default'" in w and "multicast" in w for w in answer["warnings"])


@pytest.fixture(autouse=True, scope="module")
def _close_loop() -> Iterator[None]:
    yield
    _loop.close()
