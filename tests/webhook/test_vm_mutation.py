"""The VM mutator: the pin and the rest go into spec.template, and the VMI made from it needs nothing."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch

from bridge_migration_contract import ALLOW_POD_BRIDGE_MIGRATION, HOOK_SIDECARS
from tests.webhook.vmis import vmi
from webhook.config import WebhookConfig
from webhook.macs import pinned_mac
from webhook.vm_mutation import mutate_vm
from webhook.vmi_mutation import mutate_vmi

IMAGE = "registry.example/bridge-migration:test"
CONFIG = WebhookConfig(sidecar_image=IMAGE)


def vm(*, template_metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    template: dict[str, Any] = {"spec": copy.deepcopy(vmi()["spec"])}
    if template_metadata is not None:
        template["metadata"] = template_metadata
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "web-1", "namespace": "demo"},
        "spec": {"runStrategy": "Always", "template": template},
    }


def admit(
    obj: dict[str, Any], *, gate: bool | None = True, config: WebhookConfig = CONFIG
) -> tuple[dict[str, Any], list[str]]:
    decision = mutate_vm(obj, namespace="demo", config=config, sidecar_gate_on=gate)
    return jsonpatch.apply_patch(obj, decision.patch), decision.warnings


def vmi_from(vm_obj: dict[str, Any]) -> dict[str, Any]:
    """What virt-controller makes of the VM: the template, named after the VM."""
    template = vm_obj["spec"]["template"]
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": vm_obj["metadata"]["name"],
            "namespace": "demo",
            **copy.deepcopy(template.get("metadata", {})),
        },
        "spec": copy.deepcopy(template["spec"]),
    }


def test_the_template_gets_the_pin_the_allow_annotation_the_record_and_our_sidecar() -> None:
    stored, warnings = admit(vm())
    template = stored["spec"]["template"]
    mac = pinned_mac(namespace="demo", vmi_name="web-1", interface="default")
    assert template["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"] == mac
    ann = template["metadata"]["annotations"]
    assert ann[ALLOW_POD_BRIDGE_MIGRATION] == "true"
    assert json.loads(ann["bridge-migration.kubevirt.io/macs"]) == {"default": mac}
    assert [e["image"] for e in json.loads(ann[HOOK_SIDECARS])] == [IMAGE]
    assert "annotations" not in stored["metadata"]  # the VM's own metadata is left alone
    assert warnings == []


def test_the_vmi_made_from_the_template_is_admitted_without_a_change() -> None:
    stored, _ = admit(vm(template_metadata={"labels": {"app": "web"}}))
    made = vmi_from(stored)
    decision = mutate_vmi(made, namespace="demo", config=CONFIG, sidecar_gate_on=True)
    assert decision.patch == []
    # And it has the same MAC a standalone VMI of that name would get.
    standalone = jsonpatch.apply_patch(
        vmi(), mutate_vmi(vmi(), namespace="demo", config=CONFIG, sidecar_gate_on=True).patch
    )
    assert made["spec"]["domain"]["devices"]["interfaces"] == standalone["spec"]["domain"]["devices"]["interfaces"]


def test_a_reapply_that_dropped_the_mac_gets_the_same_mac_back_and_again_nothing() -> None:
    stored, _ = admit(vm())
    dropped = copy.deepcopy(stored)
    del dropped["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"]
    again, _ = admit(dropped)
    assert again == stored
    assert mutate_vm(stored, namespace="demo", config=CONFIG, sidecar_gate_on=True).patch == []


def test_with_delivery_hook_and_the_gate_off_the_vm_is_left_unchanged_with_a_warning_naming_the_vm() -> None:
    stored, warnings = admit(vm(), gate=False, config=WebhookConfig(sidecar_image=IMAGE, delivery="hook"))
    assert stored == vm()
    assert "VM demo/web-1" in warnings[0] and "feature gate is off" in warnings[0]


def test_in_auto_with_the_gate_off_the_template_records_delivery_inject_and_the_warning_names_it() -> None:
    stored, warnings = admit(vm(), gate=False)
    template_ann = stored["spec"]["template"]["metadata"]["annotations"]
    assert template_ann["bridge-migration.kubevirt.io/delivery"] == "inject"
    assert template_ann[ALLOW_POD_BRIDGE_MIGRATION] == "true"
    assert HOOK_SIDECARS not in template_ann
    assert "VM demo/web-1" in warnings[0] and "delivery inject" in warnings[0]
    # The VMI virt-controller makes from it needs nothing more, whatever the gate says by then.
    assert mutate_vmi(vmi_from(stored), namespace="demo", config=CONFIG, sidecar_gate_on=True).patch == []


def test_malformed_template_annotations_leave_the_vm_unchanged() -> None:
    bad = vm(template_metadata={"annotations": {"x": 1}})
    stored, warnings = admit(bad)
    assert stored == bad and "must be strings" in warnings[0]


def test_a_vm_without_a_template_to_change_is_none_of_our_business() -> None:
    specs: list[dict[str, Any] | None] = [
        None,
        {"runStrategy": "Always"},
        {"template": None},
        {"template": {"metadata": {}}},
    ]
    for spec in specs:
        bare: dict[str, Any] = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "v"}}
        if spec is not None:
            bare["spec"] = spec
        decision = mutate_vm(bare, namespace="demo", config=CONFIG, sidecar_gate_on=True)
        assert decision.patch == [] and decision.warnings == [], spec


def _pinned_macs(obj: dict[str, Any]) -> list[str]:
    return [i.get("macAddress") for i in obj["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"]]


def test_two_vms_made_with_generate_name_get_different_macs() -> None:
    # A VM created with generateName reaches admission without a name: each review's uid seeds
    # its MACs, so two such VMs in one namespace do not share one.
    macs = []
    for uid in ("3f0c1b5e-0000-4000-8000-000000000001", "3f0c1b5e-0000-4000-8000-000000000002"):
        obj = vm()
        obj["metadata"] = {"generateName": "web-", "namespace": "demo"}
        decision = mutate_vm(obj, namespace="demo", config=CONFIG, sidecar_gate_on=True, fallback_name=uid)
        patched = jsonpatch.apply_patch(obj, decision.patch)
        macs.append(_pinned_macs(patched))
    assert all(m is not None for pair in macs for m in pair)
    assert macs[0] != macs[1]
