"""`kubectl apply` of VirtualMachines through the real kube-apiserver and the chart's webhooks."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from bridge_migration_contract import ALLOW_POD_BRIDGE_MIGRATION, DEFAULT_KEYS, HOOK_SIDECARS, parse_macs
from kubelab.kubectl import Kubectl
from kubelab.lab import SIDECAR_IMAGE, AdmissionLab
from tests.kube.conftest import user_annotations, vmi_manifest
from tests.kube.test_running_vmis import handler_kubectl

pytestmark = pytest.mark.kube


def vm_manifest(name: str, namespace: str, *, memory: str = "128Mi") -> dict[str, Any]:
    vmi = vmi_manifest(name, namespace)
    vmi["spec"]["domain"]["resources"]["requests"]["memory"] = memory
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"runStrategy": "Always", "template": {"metadata": {"labels": {"app": name}}, "spec": vmi["spec"]}},
    }


def template_mac(vm: dict[str, Any]) -> str:
    return str(vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"])


def test_a_vm_is_stored_with_the_pin_in_its_template_and_keeps_it_when_applied_again_or_edited(
    kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(vm_manifest("web", namespace))
    first = kubectl.get("vm", "web", namespace=namespace)
    mac = template_mac(first)
    ann = first["spec"]["template"]["metadata"]["annotations"]
    assert ALLOW_POD_BRIDGE_MIGRATION in ann
    assert parse_macs(ann[DEFAULT_KEYS.macs]) == {"default": mac}
    assert [e["image"] for e in json.loads(ann[HOOK_SIDECARS])] == [SIDECAR_IMAGE]
    assert first["spec"]["template"]["metadata"]["labels"] == {"app": "web"}

    kubectl.apply(vm_manifest("web", namespace))  # the same manifest again
    second = kubectl.get("vm", "web", namespace=namespace)
    assert second["spec"] == first["spec"]
    assert second["metadata"]["generation"] == first["metadata"]["generation"]

    kubectl.apply(vm_manifest("web", namespace, memory="256Mi"))  # an edit that touches the template
    edited = kubectl.get("vm", "web", namespace=namespace)
    assert edited["spec"]["template"]["spec"]["domain"]["resources"]["requests"]["memory"] == "256Mi"
    assert template_mac(edited) == mac
    assert edited["spec"]["template"]["metadata"]["annotations"] == ann


def test_the_vmi_virt_controller_makes_from_the_template_gets_no_further_patch(
    lab: AdmissionLab, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    kubectl.apply(vm_manifest("owned", namespace))
    vm = kubectl.get("vm", "owned", namespace=namespace)
    template = copy.deepcopy(vm["spec"]["template"])
    made = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": "owned",
            "namespace": namespace,
            "labels": template["metadata"]["labels"],
            "annotations": template["metadata"]["annotations"],
            "ownerReferences": [
                {
                    "apiVersion": "kubevirt.io/v1",
                    "kind": "VirtualMachine",
                    "name": "owned",
                    "uid": vm["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": template["spec"],
    }
    as_controller = handler_kubectl(lab, kubectl, tmp_path)  # a kubevirt-* account, as virt-controller
    result = as_controller.run("create", "-f", "-", stdin=json.dumps(made))
    assert "Warning" not in result.stderr
    stored = kubectl.get("vmi", "owned", namespace=namespace)
    assert stored["spec"] == made["spec"]  # nothing added
    assert user_annotations(stored) == made["metadata"]["annotations"]


def test_a_vm_opted_out_on_its_own_annotations_is_left_alone_and_so_is_the_vmi_made_from_it(
    lab: AdmissionLab, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    manifest = vm_manifest("quiet", namespace)
    manifest["metadata"]["annotations"] = {DEFAULT_KEYS.enabled: "false"}  # on the VM, not its template
    applied = kubectl.apply(manifest)
    assert f"Warning: bridge-migration: VM {namespace}/quiet is opted out by its own annotation" in applied.stderr
    vm = kubectl.get("vm", "quiet", namespace=namespace)
    assert "macAddress" not in vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]
    assert "annotations" not in vm["spec"]["template"]["metadata"]
    # virt-controller's VMI carries the template's metadata and a controller reference to the VM,
    # not the VM's annotations (facts K12): the webhook reads the VM, as the chart's RBAC allows.
    made = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": "quiet",
            "namespace": namespace,
            "labels": vm["spec"]["template"]["metadata"]["labels"],
            "ownerReferences": [
                {
                    "apiVersion": "kubevirt.io/v1",
                    "kind": "VirtualMachine",
                    "name": "quiet",
                    "uid": vm["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": vm["spec"]["template"]["spec"],
    }
    as_controller = handler_kubectl(lab, kubectl, tmp_path)  # a kubevirt-* account, as virt-controller
    created = as_controller.run("create", "-f", "-", stdin=json.dumps(made))
    assert f"admitted as written: its VM {namespace}/quiet is opted out" in created.stderr
    stored = kubectl.get("vmi", "quiet", namespace=namespace)
    assert stored["spec"] == made["spec"]  # no pinned MAC
    assert user_annotations(stored) == {}  # no allow annotation, no fixer, no record
