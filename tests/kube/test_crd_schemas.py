"""kube-apiserver prunes and validates our objects with KubeVirt's own CRD schemas, as a cluster does.

kubelab's CRDs carry the schemas that controller-gen makes from ``kubevirt.io/api`` (scripts/build-crds.sh,
docs/kubevirt-facts.md K8), so what the webhook patches in must survive pruning and validation there.
"""

from __future__ import annotations

import json

import pytest

from bridge_migration_contract import ALLOW_POD_BRIDGE_MIGRATION, DEFAULT_KEYS, HOOK_SIDECARS, parse_macs
from kubelab.crds import CRD_NAMES, generated_schema
from kubelab.kubectl import Kubectl, KubectlError
from kubelab.lab import SIDECAR_IMAGE
from tests.kube.conftest import user_annotations, vmi_manifest

pytestmark = pytest.mark.kube


def test_the_installed_crds_have_kubevirts_structural_schemas_not_open_ones(kubectl: Kubectl) -> None:
    for name in CRD_NAMES:
        crd = kubectl.get("crd", name)
        (version,) = crd["spec"]["versions"]
        schema = version["schema"]["openAPIV3Schema"]
        assert schema == generated_schema(name.split(".")[0])["openAPIV3Schema"], name
        assert "x-kubernetes-preserve-unknown-fields" not in schema["properties"]["spec"], name
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("NonStructuralSchema", "False") == "False", name
    vmi = kubectl.get("crd", "virtualmachineinstances.kubevirt.io")
    assert "subresources" not in vmi["spec"]["versions"][0], "KubeVirt's VMI CRD has no status subresource"


def test_an_unknown_spec_field_is_refused_by_kubectl_and_pruned_for_a_client_that_does_not_validate(
    kubectl: Kubectl, namespace: str
) -> None:
    manifest = vmi_manifest("unknown-field", namespace, binding="masquerade")
    manifest["spec"]["notAKubeVirtField"] = True
    # kubectl asks for strict field validation by default: the API server names the field.
    with pytest.raises(KubectlError, match=r'unknown field "spec\.notAKubeVirtField"'):
        kubectl.apply(manifest)
    # A client that asks for none (as controllers usually do) gets the object stored, pruned.
    kubectl.apply(manifest, extra=["--validate=false"])
    stored = kubectl.get("vmi", "unknown-field", namespace=namespace)
    assert "notAKubeVirtField" not in stored["spec"]
    assert stored["spec"]["domain"]["devices"]["interfaces"] == manifest["spec"]["domain"]["devices"]["interfaces"]


def test_where_kubevirts_schema_preserves_unknown_fields_they_are_kept(kubectl: Kubectl, namespace: str) -> None:
    # The clock is the one place in KubeVirt's VMI spec left open (x-kubernetes-preserve-unknown-fields).
    manifest = vmi_manifest("clock", namespace, binding="masquerade")
    manifest["spec"]["domain"]["clock"] = {"utc": {}, "someFutureClockField": {"x": 1}}
    kubectl.apply(manifest)
    stored = kubectl.get("vmi", "clock", namespace=namespace)
    assert stored["spec"]["domain"]["clock"] == manifest["spec"]["domain"]["clock"]


def test_a_field_of_the_wrong_type_is_refused_with_kube_apiservers_message(kubectl: Kubectl, namespace: str) -> None:
    manifest = vmi_manifest("wrong-type", namespace, binding="masquerade")
    manifest["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"] = 12
    with pytest.raises(KubectlError) as refused:
        kubectl.apply(manifest)
    assert (
        'spec.domain.devices.interfaces[0].macAddress: Invalid value: "integer": '
        'spec.domain.devices.interfaces[0].macAddress in body must be of type string: "integer"'
    ) in refused.value.stderr


def test_a_vmi_without_its_required_domain_is_refused(kubectl: Kubectl, namespace: str) -> None:
    manifest = vmi_manifest("no-domain", namespace, binding="masquerade")
    del manifest["spec"]["domain"]
    with pytest.raises(KubectlError, match=r"spec\.domain: Required value"):
        kubectl.apply(manifest)


def test_quantities_are_int_or_string_as_in_kubevirts_schema(kubectl: Kubectl, namespace: str) -> None:
    manifest = vmi_manifest("quantity", namespace, binding="masquerade")
    manifest["spec"]["domain"]["resources"]["requests"]["memory"] = 134217728
    kubectl.apply(manifest)
    stored = kubectl.get("vmi", "quantity", namespace=namespace)
    assert stored["spec"]["domain"]["resources"]["requests"]["memory"] == 134217728
    manifest["spec"]["domain"]["resources"]["requests"]["memory"] = "lots"
    with pytest.raises(KubectlError, match=r"spec\.domain\.resources\.requests\.memory"):
        kubectl.apply(manifest)


def test_our_vmi_patches_survive_kubevirts_schema(kubectl: Kubectl, namespace: str) -> None:
    # Pruning runs on the object after mutation: a field our patch put where KubeVirt's schema has
    # none would be dropped silently, so every patched field must come back from storage.
    kubectl.apply(vmi_manifest("patched", namespace))
    stored = kubectl.get("vmi", "patched", namespace=namespace)
    (iface,) = stored["spec"]["domain"]["devices"]["interfaces"]
    ann = user_annotations(stored)
    assert parse_macs(ann[DEFAULT_KEYS.macs]) == {"default": iface["macAddress"]}
    assert ALLOW_POD_BRIDGE_MIGRATION in ann
    assert [s["image"] for s in json.loads(ann[HOOK_SIDECARS])] == [SIDECAR_IMAGE]


def test_our_vm_template_patches_survive_kubevirts_schema(kubectl: Kubectl, namespace: str) -> None:
    template = vmi_manifest("templated", namespace)
    vm = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "templated", "namespace": namespace},
        "spec": {
            "runStrategy": "Halted",
            "template": {"metadata": {"labels": {"app": "templated"}}, "spec": template["spec"]},
        },
    }
    kubectl.apply(vm)
    stored = kubectl.get("vm", "templated", namespace=namespace)
    tmpl = stored["spec"]["template"]
    (iface,) = tmpl["spec"]["domain"]["devices"]["interfaces"]
    ann = tmpl["metadata"]["annotations"]
    assert parse_macs(ann[DEFAULT_KEYS.macs]) == {"default": iface["macAddress"]}
    assert ALLOW_POD_BRIDGE_MIGRATION in ann
    assert [s["image"] for s in json.loads(ann[HOOK_SIDECARS])] == [SIDECAR_IMAGE]
    assert tmpl["metadata"]["labels"] == {"app": "templated"}
