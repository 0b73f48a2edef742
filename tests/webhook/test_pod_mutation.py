"""The virt-launcher pod mutator: our sidecar container gets libvirt and the pod's annotations; in
delivery inject our container is added (rendered pods from kubelab's fake virt-controller, a stand-in)."""

from __future__ import annotations

from typing import Any

import jsonpatch
import pytest

from kubelab.fake_virt_controller import render_launcher_pod
from tests.webhook.launcher_pods import IMAGE, launcher_pod
from webhook.config import WebhookConfig
from webhook.decision import Decision
from webhook.injected import pod_qos_class
from webhook.kube import observed_kubevirt_version_in
from webhook.pod_mutation import mutate_launcher_pod

MACS = "bridge-migration.kubevirt.io/macs"
HINT = "cni.projectcalico.org/hwAddr"
CONFIG = WebhookConfig(sidecar_image=IMAGE, cni_mac_annotation=HINT)


def admit(pod: dict[str, Any], **kw: Any) -> tuple[dict[str, Any], Decision]:
    decision = mutate_launcher_pod(pod, config=kw.pop("config", CONFIG), **kw)
    return jsonpatch.apply_patch(pod, decision.patch), decision


def mounts(pod: dict[str, Any], container: str) -> dict[str, str]:
    (c,) = [c for c in pod["spec"]["containers"] if c["name"] == container]
    return {m["name"]: m["mountPath"] for m in c["volumeMounts"]}


def test_our_sidecar_container_gets_the_libvirt_socket_dir_and_the_annotations_file() -> None:
    stored, _ = admit(launcher_pod())
    assert mounts(stored, "hook-sidecar-0") == {
        "hook-sidecar-sockets": "/var/run/kubevirt-hooks",
        "libvirt-runtime": "/var/run/libvirt",
        "bridge-migration-podinfo": "/etc/bridge-migration/podinfo",
    }
    (podinfo,) = [v for v in stored["spec"]["volumes"] if v["name"] == "bridge-migration-podinfo"]
    assert podinfo["downwardAPI"]["items"] == [
        {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}
    ]
    assert mounts(stored, "compute") == {"libvirt-runtime": "/var/run/libvirt"}


def test_the_mutated_pod_admitted_again_changes_nothing() -> None:
    stored, _ = admit(launcher_pod())
    _, decision = admit(stored)
    assert decision.patch == []


def test_a_pod_without_our_sidecar_is_untouched() -> None:
    _, decision = admit(launcher_pod(sidecar_image="quay.io/someone/else:1"))
    assert decision.patch == [] and decision.warnings == []


def test_a_source_pod_gets_no_cni_mac_hint() -> None:
    stored, _ = admit(launcher_pod(annotations={MACS: '{"default":"02:00:00:00:00:01"}'}))
    assert HINT not in stored["metadata"]["annotations"]


def test_a_migration_target_pod_gets_the_cni_mac_hint_from_the_expected_macs() -> None:
    stored, _ = admit(launcher_pod(target=True, annotations={MACS: '{"default":"02:00:00:00:00:01"}'}))
    assert stored["metadata"]["annotations"][HINT] == "02:00:00:00:00:01"


def test_a_target_pod_missing_the_macs_gets_them_from_the_vmi() -> None:
    stored, _ = admit(
        launcher_pod(target=True),
        vmi_macs={"default": "02:00:00:00:00:07", "lan": "02:00:00:00:00:08"},
        pod_network_interfaces=["default"],
    )
    ann = stored["metadata"]["annotations"]
    assert ann[MACS] == '{"default":"02:00:00:00:00:07","lan":"02:00:00:00:00:08"}'
    assert ann[HINT] == "02:00:00:00:00:07"


def test_a_cni_hint_the_user_set_is_not_clobbered() -> None:
    pod = launcher_pod(target=True, annotations={MACS: '{"default":"02:00:00:00:00:01"}', HINT: "02:99:99:99:99:99"})
    stored, _ = admit(pod)
    assert stored["metadata"]["annotations"][HINT] == "02:99:99:99:99:99"


def test_without_a_configured_cni_key_no_hint_is_set() -> None:
    stored, _ = admit(
        launcher_pod(target=True, annotations={MACS: '{"default":"02:00:00:00:00:01"}'}),
        config=WebhookConfig(sidecar_image=IMAGE),
    )
    assert HINT not in stored["metadata"]["annotations"]


def test_several_macs_and_no_idea_which_is_on_the_pod_network_warns_instead_of_guessing() -> None:
    pod = launcher_pod(target=True, annotations={MACS: '{"a":"02:00:00:00:00:01","b":"02:00:00:00:00:02"}'})
    stored, decision = admit(pod)
    assert HINT not in stored["metadata"]["annotations"]
    assert any(HINT in w for w in decision.warnings)


def test_a_pod_without_the_libvirt_runtime_volume_is_left_alone_with_a_warning() -> None:
    pod = launcher_pod()
    pod["spec"]["volumes"] = [v for v in pod["spec"]["volumes"] if v["name"] != "libvirt-runtime"]
    _, decision = admit(pod)
    assert decision.patch == [] and "libvirt-runtime" in decision.warnings[0]


def test_volume_and_mount_names_of_the_wrong_type_do_not_break_the_mutator() -> None:
    """Found by the fuzzer: a list where a name should be made the set of names unhashable."""
    pod = launcher_pod()
    pod["spec"]["volumes"].append({"name": ["x"], "emptyDir": {}})
    pod["spec"]["containers"][1]["volumeMounts"].append({"name": {"y": 1}, "mountPath": "/y"})
    stored, decision = admit(pod)
    ours = stored["spec"]["containers"][1]["volumeMounts"]
    assert [m["name"] for m in ours][-2:] == ["libvirt-runtime", "bridge-migration-podinfo"]
    assert decision.warnings == []


def test_the_observed_kubevirt_version_goes_on_every_launcher_pod_for_the_sidecars_dhcp_rule() -> None:
    version_key = "bridge-migration.kubevirt.io/kubevirt-version"
    for target in (False, True):
        stored, _ = admit(launcher_pod(target=target), kubevirt_version="v1.8.4")
        assert stored["metadata"]["annotations"][version_key] == "v1.8.4"
    # Unknown (the CR not read yet, or a digest-pinned install): nothing; the sidecar's flag decides.
    stored, _ = admit(launcher_pod())
    assert version_key not in (stored["metadata"].get("annotations") or {})
    # One the pod already carries is left as it is.
    stored, _ = admit(launcher_pod(annotations={version_key: "v1.9.1"}), kubevirt_version="v1.8.4")
    assert stored["metadata"]["annotations"][version_key] == "v1.9.1"


def test_the_observed_version_is_read_from_the_kubevirt_cr_status_and_only_when_it_parses() -> None:
    def cr(version: object) -> dict[str, Any]:
        return {"spec": {}, "status": {"observedKubeVirtVersion": version}}

    assert observed_kubevirt_version_in({"items": [cr("v1.9.0")]}) == "v1.9.0"
    assert observed_kubevirt_version_in({"items": [cr("sha256:0123abcd"), cr("v1.7.2")]}) == "v1.7.2"
    assert observed_kubevirt_version_in({"items": [{"spec": {}}]}) is None
    assert observed_kubevirt_version_in({"items": [cr(17)]}) is None
    assert observed_kubevirt_version_in({}) is None


# --- found by mutation testing (docs/testing.md, "Mutation testing") --------------------------------


def test_our_sidecar_container_without_any_mounts_gets_both_of_ours() -> None:
    pod = launcher_pod()
    del pod["spec"]["containers"][1]["volumeMounts"]
    stored, decision = admit(pod)
    assert mounts(stored, "hook-sidecar-0") == {
        "libvirt-runtime": "/var/run/libvirt",
        "bridge-migration-podinfo": "/etc/bridge-migration/podinfo",
    }
    assert decision.warnings == []


def test_a_pod_without_any_volumes_is_left_alone_with_a_warning() -> None:
    pod = launcher_pod()
    del pod["spec"]["volumes"]
    _, decision = admit(pod)
    assert decision.patch == []
    assert decision.warnings == [
        "bridge-migration: pod has no libvirt-runtime volume; the sidecar cannot reach libvirt"
    ]


def test_a_target_pod_keeps_its_own_annotations_when_ours_are_added() -> None:
    pod = launcher_pod(target=True, annotations={MACS: '{"default":"02:00:00:00:00:01"}'})
    stored, _ = admit(pod, kubevirt_version="v1.9.0")
    assert stored["metadata"]["annotations"] == {
        **pod["metadata"]["annotations"],
        HINT: "02:00:00:00:00:01",
        "bridge-migration.kubevirt.io/kubevirt-version": "v1.9.0",
    }


def test_a_target_pod_with_a_malformed_macs_annotation_says_so_and_sets_no_hint() -> None:
    stored, decision = admit(launcher_pod(target=True, annotations={MACS: "default=02:00:00:00:00:01"}))
    assert HINT not in stored["metadata"]["annotations"]
    assert decision.warnings[0].startswith(f"bridge-migration: annotation {MACS} on the pod ignored: ")


# --- delivery inject: where our container goes, which pods get none, how it is hardened ----------


def stored_vmi(*, annotations: dict[str, str] | None = None, guaranteed: bool = False) -> dict[str, Any]:
    """A VMI as the API server stores it after our VMI webhook chose delivery inject."""
    both = {"cpu": "1", "memory": "128Mi"}
    resources = {"requests": dict(both), "limits": dict(both)} if guaranteed else {"requests": {"memory": "128Mi"}}
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": "web-1",
            "namespace": "demo",
            "uid": "0b4c6f0e-0000-4000-8000-000000000001",
            "annotations": {"bridge-migration.kubevirt.io/delivery": "inject", **(annotations or {})},
        },
        "spec": {
            "domain": {"devices": {"interfaces": [{"name": "default", "bridge": {}}]}, "resources": resources},
            "networks": [{"name": "default", "pod": {}}],
        },
    }


def everything(pod: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


@pytest.mark.parametrize("version", ["v1.5.0", "v1.6.0", "v1.9.0"])
def test_our_container_is_a_native_sidecar_after_kubevirts_own_init_containers(version: str) -> None:
    rendered = render_launcher_pod(stored_vmi(), kubevirt_version=version)
    stored, decision = admit(rendered)
    assert decision.warnings == []
    # KubeVirt's containers are left as rendered, in their places; ours is the last init container.
    assert stored["spec"]["containers"] == rendered["spec"]["containers"]
    *theirs, ours = stored["spec"]["initContainers"]
    assert theirs == rendered["spec"].get("initContainers", [])
    assert (ours["name"], ours["image"], ours["restartPolicy"]) == ("bridge-migration", IMAGE, "Always")
    # v1.6 and newer: KubeVirt's own guest-console-log is a native sidecar, first (facts I9).
    assert [c["name"] for c in theirs] == ([] if version == "v1.5.0" else ["guest-console-log"])
    # No probe: compute starts once ours has started, and ours is Ready once it runs.
    assert not {"readinessProbe", "startupProbe", "livenessProbe"} & set(ours)
    # Admitted again (reinvocationPolicy IfNeeded): nothing more.
    assert admit(stored)[1].patch == []


def test_a_pod_admitted_by_an_earlier_release_keeps_its_regular_container_and_gets_no_second() -> None:
    """Before this release our container was a regular one; such a pod (a VMI's launcher created
    while the old webhook ran, admitted again, or its copy) is ours already."""
    rendered = render_launcher_pod(stored_vmi())
    earlier = {
        "name": "bridge-migration",
        "image": IMAGE.rsplit(":", 1)[0] + ":0.0.9",
        "command": ["python", "-m", "sidecar", "serve", "--delivery", "inject"],
        "volumeMounts": [
            {"name": "libvirt-runtime", "mountPath": "/var/run/libvirt"},
            {"name": "bridge-migration-podinfo", "mountPath": "/etc/bridge-migration/podinfo", "readOnly": True},
        ],
    }
    rendered["spec"]["containers"].append(earlier)
    rendered["spec"]["volumes"].append(
        {
            "name": "bridge-migration-podinfo",
            "downwardAPI": {"items": [{"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}]},
        }
    )
    stored, decision = admit(rendered)
    assert decision.patch == [] and decision.warnings == []
    assert [c["name"] for c in everything(stored)].count("bridge-migration") == 1


def test_an_init_container_of_that_name_that_is_not_ours_gets_no_second_one_and_a_warning() -> None:
    """The API server refuses a pod with two containers of one name, init or regular."""
    rendered = render_launcher_pod(stored_vmi())
    rendered["spec"]["initContainers"].append({"name": "bridge-migration", "image": "example.org/other:1"})
    stored, decision = admit(rendered)
    assert stored == rendered
    assert "already has a container named bridge-migration" in decision.warnings[0]


@pytest.mark.parametrize("value", ["true", "", "false"])
def test_a_temporary_wait_for_first_consumer_pod_gets_no_fixer(value: str) -> None:
    """virt-controller's temporary pod only gets the PVCs bound (compute runs echo and exits); it
    is marked by the annotation's key, whatever the value (facts I13). No VM runs there: a fixer
    waiting for virtqemud's socket would only keep that pod from ending."""
    temp = render_launcher_pod(stored_vmi(), temp_pod=True)
    temp["metadata"]["annotations"]["kubevirt.io/ephemeral-provisioning"] = value
    stored, decision = admit(temp)
    assert "bridge-migration" not in [c["name"] for c in everything(stored)]
    assert decision.warnings == []
    # The launcher pod virt-controller creates after it does get one.
    stored, _ = admit(render_launcher_pod(stored_vmi()))
    assert "bridge-migration" in [c["name"] for c in everything(stored)]


def test_the_injected_container_is_hardened_as_pod_security_restricted_asks() -> None:
    stored, _ = admit(render_launcher_pod(stored_vmi()))
    (ours,) = [c for c in everything(stored) if c["name"] == "bridge-migration"]
    sc = ours["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert (sc["runAsNonRoot"], sc["runAsUser"], sc["runAsGroup"]) == (True, 107, 107)
    assert {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"} in ours["env"]
    # Every mount read-only: it only connects to virtqemud's socket and reads the annotations.
    assert {m["name"]: m.get("readOnly") for m in ours["volumeMounts"]} == {
        "libvirt-runtime": True,
        "bridge-migration-podinfo": True,
    }


def test_a_hook_sidecar_of_ours_also_gets_the_libvirt_runtime_read_only() -> None:
    stored, _ = admit(launcher_pod())
    (sidecar,) = [c for c in stored["spec"]["containers"] if c["name"] == "hook-sidecar-0"]
    (libvirt,) = [m for m in sidecar["volumeMounts"] if m["name"] == "libvirt-runtime"]
    assert libvirt["readOnly"] is True


@pytest.mark.parametrize("guaranteed", [True, False])
def test_the_pods_qos_class_is_kept_with_kubevirts_native_sidecar_and_ours(guaranteed: bool) -> None:
    rendered = render_launcher_pod(stored_vmi(guaranteed=guaranteed))
    qos = pod_qos_class(rendered["spec"])
    assert qos == ("Guaranteed" if guaranteed else "Burstable")
    stored, _ = admit(rendered)
    assert pod_qos_class(stored["spec"]) == qos
