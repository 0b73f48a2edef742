"""`kubectl bridge-migration analyze`'s table from object fixtures (kubectl_bridge_migration/analysis.py)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from bridge_migration_contract import ALLOW_POD_BRIDGE_MIGRATION, DEFAULT_KEYS, HOOK_SIDECARS, INJECTED_CONTAINER
from kubectl_bridge_migration.analysis import COLUMNS, Snapshot, analyze, render_json, render_table

NS = "apps"
OUR_ENTRY = json.dumps(
    [{"image": "registry.example/bridge-migration-sidecar:1.0", "command": ["python", "-m", "sidecar", "serve"]}]
)


def kubevirt(*gates: str, version: str = "v1.9.0") -> dict[str, Any]:
    return {
        "metadata": {"name": "kubevirt", "namespace": "kubevirt"},
        "spec": {"configuration": {"developerConfiguration": {"featureGates": list(gates)}}},
        "status": {"observedKubeVirtVersion": version},
    }


def vmi_spec(binding: str = "bridge") -> dict[str, Any]:
    return {
        "domain": {"devices": {"interfaces": [{"name": "default", binding: {}}]}},
        "networks": [{"name": "default", "pod": {}}],
    }


def vm(
    name: str, template_ann: dict[str, str] | None = None, *, own: dict[str, str] | None = None, binding: str = "bridge"
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS, "annotations": own or {}},
        "spec": {"template": {"metadata": {"annotations": template_ann or {}}, "spec": vmi_spec(binding)}},
    }


def vmi(name: str, ann: dict[str, str], *, node: str = "node-a", uid: str = "uid-1", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS, "uid": uid, "annotations": ann},
        "spec": vmi_spec(),
        "status": {"phase": "Running", "nodeName": node, **status},
    }


def launcher(
    uid: str, *, init: list[dict[str, Any]] | None = None, containers: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {"name": f"virt-launcher-{uid}", "namespace": NS, "labels": {"kubevirt.io/created-by": uid}},
        "spec": {
            "nodeName": "node-a",
            "containers": [{"name": "compute"}, *(containers or [])],
            "initContainers": init or [],
        },
        "status": {"phase": "Running"},
    }


def agent(node: str, *, ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": f"agent-{node}", "namespace": "bridge-migration"},
        "spec": {"nodeName": node},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


HOOK = {ALLOW_POD_BRIDGE_MIGRATION: "", HOOK_SIDECARS: OUR_ENTRY}
INJECT = {ALLOW_POD_BRIDGE_MIGRATION: "", DEFAULT_KEYS.delivery: "inject"}
NODE = {ALLOW_POD_BRIDGE_MIGRATION: "", DEFAULT_KEYS.delivery: "node"}


def one(snapshot: Snapshot) -> Any:
    (row,) = analyze(snapshot)
    return row


def test_a_hook_vm_is_safe_with_the_sidecar_gate_and_stranded_without_it() -> None:
    on = one(Snapshot(vms=[vm("web", HOOK)], kubevirts=[kubevirt("Sidecar")]))
    assert (on.managed, on.migratable, on.delivery, on.stranded) == ("default", "yes", "hook", False)
    assert on.fixer == "yes (hook: Sidecar gate on)"
    off = one(Snapshot(vms=[vm("web", HOOK)], kubevirts=[kubevirt()]))
    assert off.stranded and off.fixer == "no (hook: Sidecar gate off)"
    assert "migratable with no fixer" in off.why[0]


def test_an_unreadable_kubevirt_cr_counts_as_an_unknown_gate() -> None:
    row = one(Snapshot(vms=[vm("web", HOOK)], kubevirts=None))
    assert row.stranded and "unknown" in row.fixer


def test_opt_out_on_the_vm_itself_or_its_template_is_named() -> None:
    off = {DEFAULT_KEYS.enabled: "false"}
    assert one(Snapshot(vms=[vm("a", own=off)])).managed == "no (opted out: VM)"
    assert one(Snapshot(vms=[vm("a", off)])).managed == "no (opted out: template)"
    # Not migratable (no allow annotation): nothing to strand.
    assert not one(Snapshot(vms=[vm("a", own=off)])).stranded


@pytest.mark.parametrize(
    ("binding", "managed"), [("masquerade", "no (no bridge/macvtap)"), ("macvtap", "no (core macvtap)")]
)
def test_interfaces_that_are_not_ours_say_why(binding: str, managed: str) -> None:
    row = one(Snapshot(vms=[vm("a", binding=binding)], kubevirts=[kubevirt()]))
    assert (row.managed, row.migratable, row.fixer, row.stranded) == (managed, "-", "-", False)


def test_a_bridge_vm_without_the_allow_annotation_is_not_migratable_so_not_stranded() -> None:
    row = one(Snapshot(vms=[vm("a")], kubevirts=[kubevirt()]))
    assert (row.migratable, row.delivery, row.stranded) == ("no", "-", False)


def test_restart_required_strands_the_vm() -> None:
    obj = vm("a", HOOK)
    obj["status"] = {
        "conditions": [{"type": "RestartRequired", "status": "True", "message": "a non-live-updatable field changed"}]
    }
    row = one(Snapshot(vms=[obj], kubevirts=[kubevirt("Sidecar")]))
    assert row.stranded and row.why == ["RestartRequired: a non-live-updatable field changed"]


def test_inject_needs_no_gate_but_not_a_root_launcher() -> None:
    assert not one(Snapshot(vms=[vm("a", INJECT)], kubevirts=[kubevirt()])).stranded
    root = one(Snapshot(vms=[vm("a", INJECT)], kubevirts=[kubevirt("Root")]))
    assert root.stranded and "Root feature gate" in root.fixer


def test_an_inject_vmi_needs_our_container_on_its_launcher_pod() -> None:
    ours = launcher("uid-1", init=[{"name": INJECTED_CONTAINER}])
    ok = one(Snapshot(vmis=[vmi("a", INJECT)], pods=[ours], kubevirts=[kubevirt()]))
    assert (ok.kind, ok.fixer, ok.stranded) == (
        "VirtualMachineInstance",
        "yes (inject: container bridge-migration)",
        False,
    )
    bare = one(Snapshot(vmis=[vmi("a", INJECT)], pods=[launcher("uid-1")], kubevirts=[kubevirt()]))
    assert bare.stranded and bare.fixer == "no (no container of ours on its launcher pod)"


def test_a_hook_vmi_needs_the_hook_sidecar_and_the_gate() -> None:
    sidecar = {"name": "hook-sidecar-0", "command": ["python", "-m", "sidecar", "serve"]}
    snap = Snapshot(
        vmis=[vmi("a", HOOK)], pods=[launcher("uid-1", containers=[sidecar])], kubevirts=[kubevirt("Sidecar")]
    )
    assert one(snap).fixer == "yes (hook: container hook-sidecar-0)"
    gate_off = Snapshot(vmis=snap.vmis, pods=snap.pods, kubevirts=[kubevirt()])
    assert one(gate_off).stranded


def test_a_vmi_launcher_pod_of_another_vmi_does_not_count() -> None:
    other = launcher("uid-2", init=[{"name": INJECTED_CONTAINER}])
    other["metadata"]["labels"]["vm.kubevirt.io/name"] = "a"
    assert one(Snapshot(vmis=[vmi("a", INJECT)], pods=[other], kubevirts=[kubevirt()])).fixer == "no (no launcher pod)"


def test_a_node_vmi_needs_a_ready_agent_on_its_node_and_the_plugins_gate() -> None:
    base = Snapshot(vmis=[vmi("a", NODE)], kubevirts=[kubevirt("Plugins")], node_agent_deployed=True)
    ready = Snapshot(**{**base.__dict__, "node_agent_pods": [agent("node-a")]})
    assert one(ready).fixer == "yes (node: agent Ready on node-a)"
    not_ready = Snapshot(**{**base.__dict__, "node_agent_pods": [agent("node-a", ready=False), agent("node-b")]})
    assert one(not_ready).stranded and one(not_ready).fixer == "no (node: no Ready node agent on node-a)"
    no_gate = Snapshot(**{**ready.__dict__, "kubevirts": [kubevirt()]})
    assert one(no_gate).stranded and "Plugins feature gate is off" in one(no_gate).fixer
    old = Snapshot(**{**ready.__dict__, "kubevirts": [kubevirt("Plugins", version="v1.8.2")]})
    assert "no node hooks" in one(old).fixer


def test_live_migratable_false_is_what_kubevirt_says_and_strands_nothing() -> None:
    cond = [{"type": "LiveMigratable", "status": "False", "reason": "DisksNotLiveMigratable"}]
    row = one(Snapshot(vmis=[vmi("a", INJECT, conditions=cond)], pods=[launcher("uid-1")], kubevirts=[kubevirt()]))
    assert (row.migratable, row.stranded) == ("no (DisksNotLiveMigratable)", False)


def test_a_vmi_that_is_not_running_has_nothing_for_a_drain_to_move() -> None:
    pending = vmi("a", INJECT)
    pending["status"] = {"phase": "Scheduling"}
    assert not one(Snapshot(vmis=[pending], kubevirts=[kubevirt()])).stranded


def test_a_vmi_opted_out_through_its_vm_says_so() -> None:
    obj = vmi("a", {})
    obj["metadata"]["ownerReferences"] = [
        {"kind": "VirtualMachine", "name": "a", "controller": True, "apiVersion": "kubevirt.io/v1"}
    ]
    rows = analyze(Snapshot(vms=[vm("a", own={DEFAULT_KEYS.enabled: "false"})], vmis=[obj]))
    assert [(r.kind, r.managed) for r in rows] == [
        ("VirtualMachine", "no (opted out: VM)"),
        ("VirtualMachineInstance", "no (opted out: VM)"),
    ]


def event(
    reason: str, when: str, *, name: str = "a", uid: str = "uid-1", component: str = "bridge-migration-node-agent"
) -> dict[str, Any]:
    return {
        "metadata": {"name": f"a.{when}", "namespace": NS},
        "involvedObject": {"kind": "VirtualMachineInstance", "namespace": NS, "name": name, "uid": uid},
        "reason": reason,
        "message": f"{reason} at {when}",
        "lastTimestamp": when,
        "source": {"component": component},
    }


def test_last_is_the_newest_event_of_ours_about_that_vmi() -> None:
    events = [
        event("FixupVerified", "2026-12-07T01:00:00Z"),
        event("FixupFailed", "2026-12-07T02:00:00Z"),
        event("Migrated", "2026-12-07T03:00:00Z", component="virt-handler"),  # KubeVirt's own
        event("FixupVerified", "2026-12-07T04:00:00Z", name="b"),  # another VMI
        event("FixupVerified", "2026-12-07T05:00:00Z", uid="uid-old"),  # an earlier VMI of that name
    ]
    snap = Snapshot(
        vmis=[vmi("a", INJECT)], pods=[launcher("uid-1", init=[{"name": INJECTED_CONTAINER}])], events=events
    )
    assert one(snap).last == "FixupFailed: FixupFailed at 2026-12-07T02:00:00Z"
    assert one(Snapshot(vmis=snap.vmis, pods=snap.pods)).last == "-"


def test_the_table_has_kubectls_shape_and_json_counts_the_stranded() -> None:
    rows = analyze(Snapshot(vms=[vm("web", HOOK), vm("db", binding="masquerade")], kubevirts=[kubevirt()]))
    table = render_table(rows).splitlines()
    assert table[0].split() == list(COLUMNS)
    assert [line.split()[1] for line in table[1:]] == ["db", "web"]
    assert table[2].endswith("yes")
    doc = json.loads(render_json(rows))
    assert doc["stranded"] == 1 and doc["items"][1]["name"] == "web"


def test_snapshots_are_not_changed() -> None:
    snap = Snapshot(vms=[vm("web", HOOK)], kubevirts=[kubevirt()])
    before = copy.deepcopy(snap.vms)
    analyze(snap)
    assert list(snap.vms) == before
