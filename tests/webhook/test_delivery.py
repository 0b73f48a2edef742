"""Delivery modes, the pure deciders: which fixer a VMI gets, the container inject mode adds to its
launcher pods (shape, QoS class kept), and the migration validator counting inject/node as covered."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import httpx
import jsonpatch
import pytest

from bridge_migration_contract import ALLOW_POD_BRIDGE_MIGRATION, HOOK_SIDECARS, DeliveryChoice
from tests.webhook.launcher_pods import IMAGE, launcher_pod
from tests.webhook.vmis import vmi
from webhook.app import create_app
from webhook.cli import config_from_args
from webhook.config import WebhookConfig
from webhook.delivery import KubeVirtGates, recorded_delivery, resolve_delivery
from webhook.injected import pod_qos_class
from webhook.kube import SidecarGateCache
from webhook.migration_validation import validate_migration
from webhook.orchestration import Runtime
from webhook.pod_mutation import mutate_launcher_pod
from webhook.vmi_mutation import mutate_vmi

DELIVERY = "bridge-migration.kubevirt.io/delivery"
MACS = "bridge-migration.kubevirt.io/macs"
PLUGINS_ON = KubeVirtGates(plugins=True, version="v1.9.0")


def config(delivery: DeliveryChoice = "auto", **kw: Any) -> WebhookConfig:
    return WebhookConfig(sidecar_image=IMAGE, delivery=delivery, **kw)


def admit_vmi(
    obj: dict[str, Any], *, delivery: DeliveryChoice = "auto", gate: bool | None
) -> tuple[dict[str, Any], Any]:
    decision = mutate_vmi(obj, namespace="demo", config=config(delivery), sidecar_gate_on=gate)
    return jsonpatch.apply_patch(obj, decision.patch), decision


@pytest.mark.parametrize(
    ("mode", "gate", "expected"),
    [
        ("auto", True, "hook"),
        ("auto", False, "inject"),
        ("auto", None, "inject"),  # an unreadable gate: inject works either way
        ("hook", False, "hook"),
        ("inject", True, "inject"),
        ("node", True, "node"),
        ("node", None, "node"),
    ],
)
def test_auto_is_hook_with_the_gate_on_and_inject_otherwise(
    mode: DeliveryChoice, gate: bool | None, expected: str
) -> None:
    assert resolve_delivery(mode, sidecar_gate_on=gate) == expected


def test_with_the_gate_off_auto_makes_a_bridge_vmi_migratable_by_injection_and_says_so() -> None:
    stored, decision = admit_vmi(vmi(), gate=False)
    ann = stored["metadata"]["annotations"]
    assert ann[ALLOW_POD_BRIDGE_MIGRATION] == "true"
    assert ann[DELIVERY] == "inject"
    assert "macAddress" in stored["spec"]["domain"]["devices"]["interfaces"][0]
    assert json.loads(ann[MACS])["default"]
    # No hook sidecar entry: virt-api would refuse the VMI with the gate off (facts K6).
    assert HOOK_SIDECARS not in ann
    [warning] = decision.warnings
    assert "feature gate is off" in warning and "delivery inject" in warning
    assert "non-migratable" not in warning


def test_node_mode_records_node_adds_no_hook_entry_and_warns_nothing() -> None:
    # Where its fixer acts: a node agent deployed, KubeVirt v1.9+ with the Plugins gate
    # (tests/webhook/test_fixer_availability.py for where it does not).
    obj = vmi()
    decision = mutate_vmi(
        obj, namespace="demo", config=config("node", node_agent=True), sidecar_gate_on=False, kubevirt=PLUGINS_ON
    )
    stored = jsonpatch.apply_patch(obj, decision.patch)
    ann = stored["metadata"]["annotations"]
    assert (ann[DELIVERY], ann[ALLOW_POD_BRIDGE_MIGRATION]) == ("node", "true")
    assert HOOK_SIDECARS not in ann and decision.warnings == []


def test_the_vmis_own_delivery_annotation_wins_over_the_flag() -> None:
    stored, decision = admit_vmi(vmi(annotations={DELIVERY: "inject"}), delivery="hook", gate=True)
    ann = stored["metadata"]["annotations"]
    assert HOOK_SIDECARS not in ann and ann[ALLOW_POD_BRIDGE_MIGRATION] == "true"
    assert decision.warnings == []


def test_a_bad_delivery_annotation_leaves_the_vmi_unchanged_with_a_warning() -> None:
    stored, decision = admit_vmi(vmi(annotations={DELIVERY: "sidecar"}), gate=True)
    assert stored == vmi(annotations={DELIVERY: "sidecar"})
    assert "must be one of hook, inject, node" in decision.warnings[0]


def test_recorded_delivery_reads_only_inject_and_node() -> None:
    keys = config().keys
    assert [recorded_delivery({DELIVERY: v}, keys) for v in ("inject", " node ", "hook", "x")] == [
        "inject",
        "node",
        None,
        None,
    ]
    assert recorded_delivery({}, keys) is None


# --- the injected container -------------------------------------------------------------------


def rendered_pod(
    *, resources: dict[str, Any] | None = None, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    """A non-root launcher pod of an inject-mode VMI: compute only (no hook sidecar), as
    virt-controller renders it (pod securityContext of a non-root launcher, facts L6)."""
    pod = launcher_pod(annotations={DELIVERY: "inject", **(annotations or {})})
    pod["spec"]["containers"] = pod["spec"]["containers"][:1]
    pod["spec"]["volumes"] = pod["spec"]["volumes"][:1]
    pod["spec"]["securityContext"] = {"runAsUser": 107, "runAsGroup": 107, "runAsNonRoot": True, "fsGroup": 107}
    if resources is not None:
        pod["spec"]["containers"][0]["resources"] = resources
    return pod


def admit_pod(pod: dict[str, Any], **kw: Any) -> tuple[dict[str, Any], Any]:
    decision = mutate_launcher_pod(pod, config=kw.pop("config", config()), **kw)
    return jsonpatch.apply_patch(pod, decision.patch), decision


def ours(pod: dict[str, Any]) -> dict[str, Any]:
    """Our container: a native sidecar, so among the init containers (webhook/injected.py)."""
    spec = pod["spec"]
    [container] = [c for c in [*spec["containers"], *spec.get("initContainers", [])] if c["name"] == "bridge-migration"]
    return container


GUARANTEED = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1000m", "memory": "1Gi"}}
BURSTABLE = {"requests": {"memory": "1Gi"}}


def test_an_inject_mode_pod_gets_our_container_with_kubevirts_non_root_sidecar_shape() -> None:
    stored, decision = admit_pod(rendered_pod())
    assert decision.warnings == []
    container = ours(stored)
    assert container["image"] == IMAGE
    assert container["command"] == ["python", "-m", "sidecar", "serve", "--delivery", "inject"]
    assert container["securityContext"] == {
        "runAsUser": 107,
        "runAsGroup": 107,
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["restartPolicy"] == "Always" and stored["spec"]["initContainers"] == [container]
    assert {m["name"]: m["mountPath"] for m in container["volumeMounts"]} == {
        "libvirt-runtime": "/var/run/libvirt",
        "bridge-migration-podinfo": "/etc/bridge-migration/podinfo",
    }
    # Nothing that could hold the VMI: no probe (facts I3).
    assert not {"readinessProbe", "startupProbe", "livenessProbe"} & set(container)
    assert {v["name"] for v in stored["spec"]["volumes"]} == {"libvirt-runtime", "bridge-migration-podinfo"}
    assert stored["spec"]["containers"][0] == rendered_pod()["spec"]["containers"][0]  # compute as rendered


@pytest.mark.parametrize(
    ("resources", "qos"), [(GUARANTEED, "Guaranteed"), (BURSTABLE, "Burstable"), (None, "BestEffort")]
)
def test_our_container_keeps_the_pods_qos_class(resources: dict[str, Any] | None, qos: str) -> None:
    pod = rendered_pod(resources=resources)
    assert pod_qos_class(pod["spec"]) == qos
    stored, _ = admit_pod(pod)
    assert pod_qos_class(stored["spec"]) == qos
    got = ours(stored)["resources"]
    if qos == "Guaranteed":
        assert got["requests"] == got["limits"] == {"cpu": "200m", "memory": "64M"}
    elif qos == "Burstable":
        assert got["limits"] == {"cpu": "200m", "memory": "64M"}
    else:
        assert got == {}


def test_qos_follows_kubernetes_sums_and_needs_both_limits_in_every_container() -> None:
    spec = rendered_pod(resources={"limits": {"cpu": "1", "memory": "1Gi"}})["spec"]
    spec["containers"][0]["resources"]["requests"] = {"cpu": "1", "memory": "1Gi"}
    assert pod_qos_class(spec) == "Guaranteed"
    spec["initContainers"] = [{"name": "init", "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}}]
    assert pod_qos_class(spec) == "Burstable"  # an init container without a memory limit


def test_a_pod_with_pod_level_resources_gets_a_container_without_any() -> None:
    pod = rendered_pod(resources=GUARANTEED)
    pod["spec"]["resources"] = {"limits": {"cpu": "2", "memory": "2Gi"}}
    stored, _ = admit_pod(pod)
    assert ours(stored)["resources"] == {}


def test_the_injected_pod_admitted_again_changes_nothing() -> None:
    stored, _ = admit_pod(rendered_pod(resources=GUARANTEED))
    _, decision = admit_pod(stored)
    assert decision.patch == []


def test_a_pod_with_a_hook_sidecar_of_ours_gets_no_second_fixer() -> None:
    pod = launcher_pod(annotations={DELIVERY: "inject"})
    stored, _ = admit_pod(pod)
    assert [c["name"] for c in stored["spec"]["containers"]] == ["compute", "hook-sidecar-0"]


def test_a_node_mode_pod_gets_no_container_but_a_target_still_gets_its_macs() -> None:
    pod = rendered_pod()
    pod["metadata"]["annotations"][DELIVERY] = "node"
    pod["metadata"]["labels"]["kubevirt.io/migrationJobUID"] = "7f3e2a10"
    stored, _ = admit_pod(pod, vmi_macs={"default": "02:00:00:00:00:07"})
    assert [c["name"] for c in stored["spec"]["containers"]] == ["compute"]
    assert json.loads(stored["metadata"]["annotations"][MACS]) == {"default": "02:00:00:00:00:07"}


def test_a_root_launcher_or_a_taken_name_gets_no_container_and_a_warning_never_a_refused_pod() -> None:
    root = rendered_pod()
    root["spec"]["securityContext"] = {"runAsUser": 0}
    stored, decision = admit_pod(root)
    assert stored == root and "non-root launcher" in decision.warnings[0]
    taken = rendered_pod()
    taken["spec"]["containers"].append({"name": "bridge-migration", "image": "example.org/other:1"})
    stored, decision = admit_pod(taken)
    assert stored == taken and "already has a container named bridge-migration" in decision.warnings[0]


def test_a_non_default_prefix_is_handed_to_the_injected_process() -> None:
    prefixed = WebhookConfig(sidecar_image=IMAGE, keys=type(config().keys)("example.com/"))
    pod = rendered_pod()
    pod["metadata"]["annotations"] = {"kubevirt.io/domain": "web-1", "example.com/delivery": "inject"}
    stored, _ = admit_pod(pod, config=prefixed)
    assert ours(stored)["command"][-2:] == ["--annotation-prefix", "example.com/"]


# --- migration validation -----------------------------------------------------------------------


@pytest.mark.parametrize("delivery", ["inject", "node"])
def test_an_inject_or_node_vmi_migrates_silently_even_in_strict_mode(delivery: str) -> None:
    migration = {"metadata": {"name": "m", "namespace": "demo"}, "spec": {"vmiName": "web-1"}}
    covered = vmi(annotations={DELIVERY: delivery})
    strict = config(validation="strict", node_agent=True)
    decision = validate_migration(migration, covered, namespace="demo", config=strict, kubevirt=PLUGINS_ON)
    assert decision.allowed and decision.warnings == []
    bare = copy.deepcopy(vmi())
    refused = validate_migration(migration, bare, namespace="demo", config=config(validation="strict"))
    assert not refused.allowed


# --- the flag and /readyz ---------------------------------------------------------------------------


def test_the_flag_and_its_environment_twin_set_the_delivery(monkeypatch: pytest.MonkeyPatch) -> None:
    assert config_from_args(["--dev"]).delivery == "auto"
    assert config_from_args(["--dev", "--delivery", "node"]).delivery == "node"
    monkeypatch.setenv("BM_WEBHOOK_DELIVERY", "inject")
    assert config_from_args(["--dev"]).delivery == "inject"
    assert config_from_args(["--dev", "--delivery", "hook"]).delivery == "hook"  # the flag wins


@pytest.mark.parametrize(
    ("mode", "gate", "shown"), [("auto", False, "inject"), ("auto", True, "hook"), ("node", True, "node")]
)
def test_readyz_says_what_a_new_vmi_gets_now(mode: DeliveryChoice, gate: bool, shown: str) -> None:
    rt = Runtime(config=config(mode, dev=True), gate=SidecarGateCache(None, forced=gate, refresh_s=30))

    async def go() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=create_app(rt, background=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            body: dict[str, Any] = (await client.get("/readyz")).json()
            return body

    assert asyncio.run(go())["delivery"] == shown
