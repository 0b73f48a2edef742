"""`kubectl apply` of VMIs through the real kube-apiserver, which calls the webhook over HTTPS as
configured by the chart's own MutatingWebhookConfiguration."""

from __future__ import annotations

import json

import pytest

from bridge_migration_contract import ALLOW_POD_BRIDGE_MIGRATION, DEFAULT_KEYS, HOOK_SIDECARS, parse_macs
from kubelab.kubectl import Kubectl, to_yaml
from kubelab.lab import SIDECAR_IMAGE, AdmissionLab, kubevirt_cr
from tests.kube.conftest import gate_off_hook_only, user_annotations, vmi_manifest

pytestmark = pytest.mark.kube


def test_a_bridge_vmi_is_stored_migratable_with_a_pinned_mac_and_our_sidecar(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(vmi_manifest("bridge-vm", namespace))
    stored = kubectl.get("vmi", "bridge-vm", namespace=namespace)
    ann = user_annotations(stored)
    assert ALLOW_POD_BRIDGE_MIGRATION in ann
    (iface,) = stored["spec"]["domain"]["devices"]["interfaces"]
    mac = iface["macAddress"]
    assert int(mac.split(":")[0], 16) & 0b10, "a pinned MAC is locally administered"
    assert parse_macs(ann[DEFAULT_KEYS.macs]) == {"default": mac}
    sidecars = json.loads(ann[HOOK_SIDECARS])
    ours = [s for s in sidecars if s["image"] == SIDECAR_IMAGE]
    assert len(ours) == 1
    assert ours[0]["command"] == ["python", "-m", "sidecar", "serve"]


def test_applying_the_same_vmi_again_changes_nothing(kubectl: Kubectl, namespace: str) -> None:
    manifest = vmi_manifest("twice", namespace)
    kubectl.apply(manifest)
    first = kubectl.get("vmi", "twice", namespace=namespace)
    kubectl.apply(manifest)
    second = kubectl.get("vmi", "twice", namespace=namespace)
    assert second["spec"] == first["spec"], "the second apply changed the stored spec"
    assert second["metadata"]["generation"] == first["metadata"]["generation"]
    assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]


def test_users_own_hook_sidecars_are_kept_and_ours_is_added_once(kubectl: Kubectl, namespace: str) -> None:
    theirs = {"image": "example.org/their-hook:1", "args": ["--version", "v1alpha2"]}
    kubectl.apply(vmi_manifest("with-hook", namespace, annotations={HOOK_SIDECARS: json.dumps([theirs])}))
    sidecars = json.loads(user_annotations(kubectl.get("vmi", "with-hook", namespace=namespace))[HOOK_SIDECARS])
    assert sidecars[0] == theirs
    assert [s["image"] for s in sidecars] == [theirs["image"], SIDECAR_IMAGE]


def test_a_masquerade_vmi_is_stored_untouched(kubectl: Kubectl, namespace: str) -> None:
    manifest = vmi_manifest("masq", namespace, binding="masquerade")
    kubectl.apply(manifest)
    stored = kubectl.get("vmi", "masq", namespace=namespace)
    assert stored["spec"] == manifest["spec"]
    assert user_annotations(stored) == {}


def test_an_opted_out_vmi_is_stored_untouched(kubectl: Kubectl, namespace: str) -> None:
    opt_out = {DEFAULT_KEYS.enabled: "false"}
    manifest = vmi_manifest("opted-out", namespace, annotations=opt_out)
    kubectl.apply(manifest)
    stored = kubectl.get("vmi", "opted-out", namespace=namespace)
    assert stored["spec"] == manifest["spec"]
    assert user_annotations(stored) == opt_out


def test_a_namespace_labelled_opted_out_is_not_seen_by_the_webhook(kubectl: Kubectl, namespace: str) -> None:
    kubectl.run("label", "namespace", namespace, f"{DEFAULT_KEYS.enabled}=false")
    manifest = vmi_manifest("in-opted-out-ns", namespace)
    kubectl.apply(manifest)
    stored = kubectl.get("vmi", "in-opted-out-ns", namespace=namespace)
    assert stored["spec"] == manifest["spec"]
    assert user_annotations(stored) == {}


def test_with_the_webhook_down_vmis_are_still_created_fail_open(
    lab: AdmissionLab, kubectl: Kubectl, namespace: str
) -> None:
    """The chart's default failurePolicy (Ignore) on the VMI mutator: when the webhook is down the
    API server creates the VMI without our changes instead of refusing it. Fail-open is on
    purpose: a broken add-on must never stop people from creating VMs."""
    assert lab.webhook is not None
    lab.webhook.stop()
    try:
        manifest = vmi_manifest("while-down", namespace)
        kubectl.apply(manifest)
        stored = kubectl.get("vmi", "while-down", namespace=namespace)
        assert stored["spec"] == manifest["spec"]
        assert ALLOW_POD_BRIDGE_MIGRATION not in user_annotations(stored)
    finally:
        lab.webhook.start()
    # And once it is back, the next VMI is mutated again.
    kubectl.apply(vmi_manifest("after-restart", namespace))
    assert ALLOW_POD_BRIDGE_MIGRATION in user_annotations(kubectl.get("vmi", "after-restart", namespace=namespace))


def test_with_delivery_hook_and_the_sidecar_gate_off_a_bridge_vmi_is_stored_unchanged_with_a_warning(
    lab: AdmissionLab, kubectl: Kubectl, namespace: str
) -> None:
    """--sidecar-gate auto reads the KubeVirt CR: without `Sidecar` in its feature gates virt-api
    would refuse a VMI carrying hook sidecars, so the webhook must not add one. (Under the default
    --delivery auto it is made migratable by injection instead: tests/kube/test_injected_mode.py.)"""
    with gate_off_hook_only(lab):
        manifest = vmi_manifest("gate-off", namespace)
        result = kubectl.apply(manifest)
        assert "Warning:" in result.stderr
        assert "Sidecar feature gate is off" in result.stderr
        stored = kubectl.get("vmi", "gate-off", namespace=namespace)
        assert stored["spec"] == manifest["spec"]
        assert user_annotations(stored) == {}
    result = kubectl.apply(vmi_manifest("gate-on", namespace))
    assert "Warning:" not in result.stderr
    assert HOOK_SIDECARS in user_annotations(kubectl.get("vmi", "gate-on", namespace=namespace))


def test_an_entry_of_ours_from_an_earlier_release_is_replaced_never_doubled(kubectl: Kubectl, namespace: str) -> None:
    """A manifest that carries our entry with an older tag (copied from a VM made before a
    `helm upgrade`) is stored with exactly one entry of ours, the current one; two would make
    virt-launcher wait for two sockets of the same name and fail the VM."""
    theirs = {"image": "example.org/their-hook:1"}
    old = {"image": SIDECAR_IMAGE.rpartition(":")[0] + ":0.0.9", "command": ["python", "-m", "sidecar", "serve"]}
    kubectl.apply(vmi_manifest("upgraded", namespace, annotations={HOOK_SIDECARS: json.dumps([old, theirs])}))
    sidecars = json.loads(user_annotations(kubectl.get("vmi", "upgraded", namespace=namespace))[HOOK_SIDECARS])
    assert [s["image"] for s in sidecars] == [SIDECAR_IMAGE, theirs["image"]]
    assert sidecars[1] == theirs


def test_a_vmi_whose_annotations_would_not_fit_with_ours_is_created_as_written_with_a_warning(
    kubectl: Kubectl, namespace: str
) -> None:
    """The API server refuses an object whose annotations exceed 262144 bytes after every mutating
    webhook ran (facts K10): a VMI that fits as written must not be made to fail by ours.
    (``kubectl create``: apply would add its own copy of the object as an annotation.)"""
    filler = "example.org/notes"
    manifest = vmi_manifest("big-notes", namespace, annotations={filler: "x" * (262144 - len(filler) - 100)})
    result = kubectl.run("create", "-f", "-", stdin=to_yaml(manifest))
    assert "Warning: bridge-migration: VMI" in result.stderr
    assert "262144" in result.stderr and "stays non-migratable" in result.stderr
    stored = kubectl.get("vmi", "big-notes", namespace=namespace)
    assert stored["spec"] == manifest["spec"]
    assert user_annotations(stored) == manifest["metadata"]["annotations"]


def test_a_user_set_delivery_node_without_a_node_agent_stays_non_migratable(kubectl: Kubectl, namespace: str) -> None:
    """The lab's webhook runs without --node-agent (the chart's node.enabled off): no fixer would act."""
    manifest = vmi_manifest("node-wanted", namespace, annotations={DEFAULT_KEYS.delivery: "node"})
    result = kubectl.apply(manifest)
    assert "Warning: bridge-migration:" in result.stderr and "no node agent" in result.stderr
    stored = kubectl.get("vmi", "node-wanted", namespace=namespace)
    assert stored["spec"] == manifest["spec"]
    assert user_annotations(stored) == {DEFAULT_KEYS.delivery: "node"}


def test_with_kubevirts_root_gate_on_and_no_sidecar_gate_a_bridge_vmi_stays_non_migratable(
    lab: AdmissionLab, kubectl: Kubectl, namespace: str
) -> None:
    """Root launchers get no injected fixer: the webhook reads the Root gate from the KubeVirt CR."""
    assert lab.webhook is not None
    cr = kubevirt_cr(sidecar_gate=False)
    cr["spec"]["configuration"]["developerConfiguration"]["featureGates"] = ["Root"]
    kubectl.apply(cr)
    lab.webhook.restart()  # it caches the CR's gates
    try:
        manifest = vmi_manifest("root-launcher", namespace)
        result = kubectl.apply(manifest)
        assert "Root feature gate is on" in result.stderr and "stays non-migratable" in result.stderr
        stored = kubectl.get("vmi", "root-launcher", namespace=namespace)
        assert stored["spec"] == manifest["spec"]
        assert user_annotations(stored) == {}
    finally:
        lab.set_sidecar_gate(enabled=True)
