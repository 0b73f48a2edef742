"""Through kube-apiserver, on KubeVirt's shapes: our webhooks in front of kubelab's two FAKES of
KubeVirt (not KubeVirt; docs/kubevirt-facts.md cites what each one copies):

* the fake virt-controller (kubelab/fake_virt_controller.py) renders the virt-launcher pod of a
  stored VMI, which our pod webhook then mutates;
* the fake virt-api (kubelab/fake_virt_api.py, ValidatingWebhookConfiguration
  ``kubelab-fake-virt-api``) validates every VMI after our mutating webhook, as virt-api does
  in a cluster: what it refuses, a cluster refuses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bridge_migration_contract import (
    ALLOW_POD_BRIDGE_MIGRATION,
    DEFAULT_KEYS,
    HOOK_SIDECARS,
    HOOK_SOCKET_DIR,
    LIBVIRT_RUNTIME_PATH,
    LIBVIRT_RUNTIME_VOLUME,
    PODINFO_DIR,
    PODINFO_VOLUME,
)
from kubelab.fake_virt_api import CONFIG_NAME, SIDECAR_GATE_MESSAGE, SPEC_UPDATE_MESSAGE
from kubelab.fake_virt_controller import HOOK_SIDECAR_SOCKETS, render_launcher_pod
from kubelab.kubectl import Kubectl, KubectlError
from kubelab.lab import SIDECAR_IMAGE, AdmissionLab
from tests.kube.conftest import gate_off_hook_only, user_annotations, vmi_manifest
from tests.kube.test_running_vmis import handler_kubectl

pytestmark = pytest.mark.kube

THEIRS = {"image": "example.org/their-hook:1", "args": ["--version", "v1alpha2"]}
CREATE_VALIDATOR = "virtualmachineinstances-create-validator.fake-virt-api.kubelab"
UPDATE_VALIDATOR = "virtualmachineinstances-update-validator.fake-virt-api.kubelab"


def _containers(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod["spec"]["containers"]}


def _refusal(exc: pytest.ExceptionInfo[KubectlError]) -> str:
    return exc.value.stderr


def test_the_fake_virt_api_is_registered_after_our_mutating_webhook(kubectl: Kubectl) -> None:
    config = kubectl.get("validatingwebhookconfiguration", CONFIG_NAME)
    assert [w["name"] for w in config["webhooks"]] == [CREATE_VALIDATOR, UPDATE_VALIDATOR]
    assert {w["failurePolicy"] for w in config["webhooks"]} == {"Fail"}


@pytest.mark.parametrize("kubevirt_version", ["v1.9.0", "v1.5.0"])
def test_our_sidecar_in_a_rendered_pod_gets_the_libvirt_runtime_and_podinfo(
    kubectl: Kubectl, namespace: str, kubevirt_version: str
) -> None:
    """v1.9: each sidecar mounts its own subPath of the sockets volume; v1.5: one shared directory.
    Either way ours (here the second sidecar, after the user's own) gets the libvirt runtime and the
    podinfo file, and nothing virt-controller rendered is changed."""
    kubectl.apply(vmi_manifest("rendered", namespace, annotations={HOOK_SIDECARS: json.dumps([THEIRS])}))
    vmi = kubectl.get("vmi", "rendered", namespace=namespace)
    manifest = render_launcher_pod(vmi, name="virt-launcher-rendered-x", kubevirt_version=kubevirt_version)
    rendered = _containers(manifest)
    assert rendered["hook-sidecar-1"]["image"] == SIDECAR_IMAGE
    kubectl.apply(manifest)
    pod = kubectl.get("pod", "virt-launcher-rendered-x", namespace=namespace)
    stored = _containers(pod)

    ours = stored["hook-sidecar-1"]
    mounts = {m["name"]: m for m in ours["volumeMounts"]}
    assert mounts[LIBVIRT_RUNTIME_VOLUME]["mountPath"] == LIBVIRT_RUNTIME_PATH
    assert mounts[PODINFO_VOLUME]["mountPath"] == PODINFO_DIR
    sockets = mounts[HOOK_SIDECAR_SOCKETS]
    assert sockets["mountPath"] == HOOK_SOCKET_DIR
    assert sockets.get("subPath") == ("hook-sidecar-1" if kubevirt_version == "v1.9.0" else None)
    # virt-controller's mounts come first and are kept as rendered; ours are appended.
    assert (
        ours["volumeMounts"][: len(rendered["hook-sidecar-1"]["volumeMounts"])]
        == rendered["hook-sidecar-1"]["volumeMounts"]
    )
    assert ours["securityContext"] == rendered["hook-sidecar-1"]["securityContext"]
    assert ours["securityContext"]["runAsUser"] == 107
    assert ours["securityContext"]["capabilities"] == {"drop": ["ALL"]}

    # The user's sidecar and compute are left exactly as rendered.
    assert stored["hook-sidecar-0"]["volumeMounts"] == rendered["hook-sidecar-0"]["volumeMounts"]
    assert stored["compute"]["volumeMounts"] == rendered["compute"]["volumeMounts"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert set(volumes) == {v["name"] for v in manifest["spec"]["volumes"]} | {PODINFO_VOLUME}
    assert volumes[PODINFO_VOLUME]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"] == "metadata.annotations"


def test_a_guaranteed_vmis_rendered_sidecar_keeps_requests_equal_to_limits(kubectl: Kubectl, namespace: str) -> None:
    manifest = vmi_manifest("guaranteed", namespace)
    manifest["spec"]["domain"]["resources"] = {
        "requests": {"cpu": "1", "memory": "128Mi"},
        "limits": {"cpu": "1", "memory": "128Mi"},
    }
    kubectl.apply(manifest)
    vmi = kubectl.get("vmi", "guaranteed", namespace=namespace)
    kubectl.apply(render_launcher_pod(vmi, name="virt-launcher-guaranteed-x"))
    pod = kubectl.get("pod", "virt-launcher-guaranteed-x", namespace=namespace)
    sidecar = _containers(pod)["hook-sidecar-0"]
    assert sidecar["image"] == SIDECAR_IMAGE
    assert sidecar["resources"]["requests"] == sidecar["resources"]["limits"] == {"cpu": "200m", "memory": "64M"}
    assert {m["name"] for m in sidecar["volumeMounts"]} >= {LIBVIRT_RUNTIME_VOLUME, PODINFO_VOLUME}
    # The API server computes the QoS class at creation: our mutation keeps the pod Guaranteed.
    assert pod["status"]["qosClass"] == "Guaranteed"


def test_the_fake_virt_api_refuses_a_spec_change_by_a_normal_user(
    lab: AdmissionLab, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    kubectl.apply(vmi_manifest("fixed-spec", namespace))
    patch = json.dumps({"spec": {"domain": {"resources": {"requests": {"memory": "256Mi"}}}}})
    with pytest.raises(KubectlError) as refused:
        kubectl.run("patch", "vmi", "fixed-spec", f"--namespace={namespace}", "--type=merge", f"--patch={patch}")
    assert f'admission webhook "{UPDATE_VALIDATOR}" denied the request: {SPEC_UPDATE_MESSAGE}' in _refusal(refused)
    # KubeVirt's own service accounts may (virt-api then checks hotplug; the fake does not).
    handler = handler_kubectl(lab, kubectl, tmp_path)
    handler.run("patch", "vmi", "fixed-spec", f"--namespace={namespace}", "--type=merge", f"--patch={patch}")
    stored = kubectl.get("vmi", "fixed-spec", namespace=namespace)
    assert stored["spec"]["domain"]["resources"]["requests"]["memory"] == "256Mi"


def test_our_update_path_never_adds_what_a_normal_users_update_could_not_store(
    lab: AdmissionLab, kubectl: Kubectl, namespace: str
) -> None:
    """A user's metadata-only UPDATE passes the fake virt-api on a VMI stored without our changes
    (created while the gate was off) and on one we mutated; a replace that drops our pinned MAC is
    stored because our webhook puts the MAC back, so the spec is unchanged."""
    with gate_off_hook_only(lab):
        kubectl.apply(vmi_manifest("before-install", namespace))
    kubectl.apply(vmi_manifest("ours", namespace))
    untouched = kubectl.get("vmi", "before-install", namespace=namespace)
    mutated = kubectl.get("vmi", "ours", namespace=namespace)
    assert "macAddress" not in untouched["spec"]["domain"]["devices"]["interfaces"][0]

    for name in ("before-install", "ours"):
        kubectl.run("label", "vmi", name, f"--namespace={namespace}", "team=a")
        kubectl.run("annotate", "vmi", name, f"--namespace={namespace}", "note=edited")
    assert kubectl.get("vmi", "before-install", namespace=namespace)["spec"] == untouched["spec"]
    assert kubectl.get("vmi", "ours", namespace=namespace)["spec"] == mutated["spec"]

    # The user's own manifest again, whole: no macAddress in it. Without our UPDATE path putting the
    # pinned MAC back, the fake virt-api would refuse this as a spec change.
    for name, before in (("ours", mutated), ("before-install", untouched)):
        again = vmi_manifest(name, namespace)
        # A custom resource's UPDATE must name the version it replaces.
        again["metadata"]["resourceVersion"] = kubectl.get("vmi", name, namespace=namespace)["metadata"][
            "resourceVersion"
        ]
        kubectl.run("replace", "-f", "-", stdin=json.dumps(again))
        assert kubectl.get("vmi", name, namespace=namespace)["spec"] == before["spec"]


def test_the_fake_virt_api_refuses_hook_sidecars_while_the_gate_is_off_and_we_add_none(
    lab: AdmissionLab, kubectl: Kubectl, namespace: str
) -> None:
    lab.set_sidecar_gate(enabled=False)
    try:
        with pytest.raises(KubectlError) as refused:
            kubectl.apply(vmi_manifest("own-hook", namespace, annotations={HOOK_SIDECARS: json.dumps([THEIRS])}))
        assert f'admission webhook "{CREATE_VALIDATOR}" denied the request: {SIDECAR_GATE_MESSAGE}' in _refusal(refused)
        # A bridge VMI without an entry of its own: we add none (delivery auto resolves to inject),
        # so it is created, and migratable.
        kubectl.apply(vmi_manifest("no-hook", namespace))
        stored = user_annotations(kubectl.get("vmi", "no-hook", namespace=namespace))
        assert HOOK_SIDECARS not in stored
        assert stored[DEFAULT_KEYS.delivery] == "inject"
        assert stored[ALLOW_POD_BRIDGE_MIGRATION] == "true"
    finally:
        lab.set_sidecar_gate(enabled=True)
    # With the gate on the same VMI is stored, our entry after the user's.
    kubectl.apply(vmi_manifest("own-hook", namespace, annotations={HOOK_SIDECARS: json.dumps([THEIRS])}))
    entries = json.loads(user_annotations(kubectl.get("vmi", "own-hook", namespace=namespace))[HOOK_SIDECARS])
    assert [e["image"] for e in entries] == [THEIRS["image"], SIDECAR_IMAGE]


@pytest.mark.parametrize("binding", ["bridge", "masquerade"])
def test_the_fake_virt_api_refuses_a_malformed_mac(kubectl: Kubectl, namespace: str, binding: str) -> None:
    """Our webhook never pins over a user's MAC, even a malformed one (it warns): virt-api's word
    on it is the one the user sees."""
    manifest = vmi_manifest(f"bad-mac-{binding}", namespace, binding=binding)
    manifest["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"] = "02:00:00:00:00"
    with pytest.raises(KubectlError) as refused:
        kubectl.apply(manifest)
    message = "interface spec.domain.devices.interfaces[0].name has malformed MAC address (02:00:00:00:00)."
    assert f'admission webhook "{CREATE_VALIDATOR}" denied the request: {message}' in _refusal(refused)
