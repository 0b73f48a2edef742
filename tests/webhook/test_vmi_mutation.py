"""The VMI mutator, as a user sees its result: the object the apiserver would store."""

from __future__ import annotations

import json
from typing import Any

import jsonpatch

from bridge_migration_contract import ALLOW_POD_BRIDGE_MIGRATION, HOOK_SIDECARS, AnnotationKeys
from tests.webhook.vmis import masquerade_vmi, vmi
from webhook.config import WebhookConfig
from webhook.decision import Decision
from webhook.macs import pinned_mac
from webhook.vmi_mutation import mutate_vmi, restore_dropped_macs

IMAGE = "registry.example/bridge-migration:test"
CONFIG = WebhookConfig(sidecar_image=IMAGE)
POLICY = "bridge-migration.kubevirt.io/mac-policy"
MACS = "bridge-migration.kubevirt.io/macs"


def admit(
    obj: dict[str, Any], *, config: WebhookConfig = CONFIG, gate: bool | None = True
) -> tuple[dict[str, Any], Decision]:
    decision = mutate_vmi(obj, namespace=obj["metadata"]["namespace"], config=config, sidecar_gate_on=gate)
    return jsonpatch.apply_patch(obj, decision.patch), decision


def sidecars(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return json.loads(obj["metadata"]["annotations"][HOOK_SIDECARS])  # type: ignore[no-any-return]


def test_a_bridge_vmi_becomes_migratable_with_a_pinned_mac_and_our_sidecar() -> None:
    stored, decision = admit(vmi())
    mac = pinned_mac(namespace="demo", vmi_name="web-1", interface="default")
    ann = stored["metadata"]["annotations"]
    assert ann[ALLOW_POD_BRIDGE_MIGRATION] == "true"
    assert stored["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"] == mac
    assert json.loads(ann[MACS]) == {"default": mac}
    assert ann[POLICY] == "pin"
    assert [s["image"] for s in sidecars(stored)] == [IMAGE]
    assert decision.warnings == []


def test_admitting_the_patched_vmi_again_changes_nothing() -> None:
    stored, _ = admit(vmi())
    again, decision = admit(stored)
    assert decision.patch == []
    assert again == stored


def test_masquerade_only_vmis_get_no_patch() -> None:
    _, decision = admit(masquerade_vmi())
    assert decision.patch == [] and decision.warnings == []


def test_an_opted_out_vmi_gets_no_patch() -> None:
    _, decision = admit(vmi(annotations={"bridge-migration.kubevirt.io/enabled": "false"}))
    assert decision.patch == []


HOOK_ONLY = WebhookConfig(sidecar_image=IMAGE, delivery="hook")


def test_with_delivery_hook_and_the_sidecar_gate_off_nothing_changes_and_the_warning_says_why() -> None:
    stored, decision = admit(vmi(), config=HOOK_ONLY, gate=False)
    assert stored == vmi()
    assert len(decision.warnings) == 1
    assert "Sidecar feature gate is off" in decision.warnings[0]
    assert "non-migratable" in decision.warnings[0]


def test_with_delivery_hook_and_the_gate_unknown_nothing_changes_either() -> None:
    stored, decision = admit(vmi(), config=HOOK_ONLY, gate=None)
    assert stored == vmi()
    assert "could not be read" in decision.warnings[0]


def test_user_sidecars_are_kept_and_ours_is_added_once() -> None:
    theirs = [{"image": "quay.io/me/hook:1", "args": ["--version", "v1alpha2"]}]
    stored, _ = admit(vmi(annotations={HOOK_SIDECARS: json.dumps(theirs)}))
    assert sidecars(stored)[0] == theirs[0]
    assert [s["image"] for s in sidecars(stored)] == ["quay.io/me/hook:1", IMAGE]
    again, decision = admit(stored)
    assert decision.patch == [] and len(sidecars(again)) == 2


def test_keep_and_follow_pod_leave_macs_alone() -> None:
    for policy in ("keep", "follow-pod"):
        stored, _ = admit(vmi(annotations={POLICY: policy}))
        assert "macAddress" not in stored["spec"]["domain"]["devices"]["interfaces"][0]
        assert MACS not in stored["metadata"]["annotations"]
        assert stored["metadata"]["annotations"][ALLOW_POD_BRIDGE_MIGRATION] == "true"


def test_the_flag_default_policy_applies_when_the_vmi_says_nothing() -> None:
    stored, _ = admit(vmi(), config=WebhookConfig(sidecar_image=IMAGE, mac_policy="keep"))
    assert stored["metadata"]["annotations"][POLICY] == "keep"
    assert "macAddress" not in stored["spec"]["domain"]["devices"]["interfaces"][0]


def test_an_explicit_spec_mac_is_kept_and_recorded() -> None:
    iface = {"name": "default", "bridge": {}, "macAddress": "02:11:22:33:44:55"}
    stored, _ = admit(vmi(interfaces=[iface]))
    assert stored["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"] == "02:11:22:33:44:55"
    assert json.loads(stored["metadata"]["annotations"][MACS]) == {"default": "02:11:22:33:44:55"}


def test_a_mac_the_user_recorded_is_the_one_pinned() -> None:
    stored, _ = admit(vmi(annotations={MACS: '{"default": "02:AA:00:00:00:01"}'}))
    assert stored["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"] == "02:aa:00:00:00:01"
    assert stored["metadata"]["annotations"][MACS] == '{"default": "02:AA:00:00:00:01"}'


def test_an_unknown_policy_annotation_warns_and_falls_back_to_the_default() -> None:
    stored, decision = admit(vmi(annotations={POLICY: "random"}))
    assert any(POLICY in w for w in decision.warnings)
    assert stored["metadata"]["annotations"][POLICY] == "random"  # the user's value is not rewritten
    assert "macAddress" in stored["spec"]["domain"]["devices"]["interfaces"][0]


def test_the_nic_refresh_annotation_is_passed_through_and_a_bad_value_gets_a_warning() -> None:
    refresh = "bridge-migration.kubevirt.io/nic-refresh"
    stored, decision = admit(vmi(annotations={refresh: "reattach"}))
    assert stored["metadata"]["annotations"][refresh] == "reattach" and decision.warnings == []
    stored, decision = admit(vmi(annotations={refresh: "sometimes"}))
    assert stored["metadata"]["annotations"][refresh] == "sometimes"  # the user's value is not rewritten
    assert any(refresh in w and "using link" in w for w in decision.warnings)


def test_malformed_hook_sidecars_leave_the_vmi_unchanged_with_a_warning_naming_it() -> None:
    obj = vmi(annotations={HOOK_SIDECARS: "[{not json"})
    stored, decision = admit(obj)
    assert stored == obj
    assert HOOK_SIDECARS in decision.warnings[0]


def test_a_malformed_macs_annotation_is_left_as_is_with_a_warning() -> None:
    obj = vmi(annotations={MACS: "nope"})
    stored, decision = admit(obj)
    assert stored["metadata"]["annotations"][MACS] == "nope"
    assert any(MACS in w for w in decision.warnings)
    assert stored["metadata"]["annotations"][ALLOW_POD_BRIDGE_MIGRATION] == "true"


def test_an_invalid_spec_mac_is_not_overwritten() -> None:
    obj = vmi(interfaces=[{"name": "default", "bridge": {}, "macAddress": "not-a-mac"}])
    stored, decision = admit(obj)
    assert stored["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"] == "not-a-mac"
    assert any("invalid macAddress" in w for w in decision.warnings)


def test_macvtap_only_vmis_get_the_sidecar_but_not_the_bridge_allow_annotation() -> None:
    obj = vmi(
        interfaces=[{"name": "lan", "binding": {"name": "macvtap"}}],
        networks=[{"name": "lan", "multus": {"networkName": "lan"}}],
    )
    stored, _ = admit(obj)
    ann = stored["metadata"]["annotations"]
    assert ALLOW_POD_BRIDGE_MIGRATION not in ann
    assert [s["image"] for s in sidecars(stored)] == [IMAGE]
    assert "lan" in json.loads(ann[MACS])


def test_an_existing_allow_annotation_is_not_touched() -> None:
    stored, _ = admit(vmi(annotations={ALLOW_POD_BRIDGE_MIGRATION: ""}))
    assert stored["metadata"]["annotations"][ALLOW_POD_BRIDGE_MIGRATION] == ""


def test_the_annotation_prefix_is_honoured() -> None:
    config = WebhookConfig(sidecar_image=IMAGE, keys=AnnotationKeys("acme.io/"))
    stored, _ = admit(vmi(annotations={"acme.io/enabled": "true"}), config=config)
    assert "acme.io/macs" in stored["metadata"]["annotations"]
    _, decision = admit(vmi(annotations={"acme.io/enabled": "false"}), config=config)
    assert decision.patch == []
    # The sidecar must read the same keys: the entry hands it the prefix.
    [ours] = [e for e in sidecars(stored) if e["image"] == IMAGE]
    assert ours["args"] == ["--annotation-prefix", "acme.io/"]


def test_with_the_default_prefix_the_entry_carries_no_args() -> None:
    stored, _ = admit(vmi())
    [ours] = sidecars(stored)
    assert "args" not in ours


def test_an_update_puts_back_only_a_mac_we_pinned_that_a_reapply_dropped() -> None:
    stored, _ = admit(vmi())
    dropped = json.loads(json.dumps(stored))
    del dropped["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"]
    decision = restore_dropped_macs(dropped, stored, config=CONFIG)
    assert jsonpatch.apply_patch(dropped, decision.patch) == stored
    assert decision.warnings == []


def test_an_update_never_retrofits_a_vmi_we_did_not_mutate() -> None:
    running = vmi()  # created before the install, or while the gate was off: no MAC, no record
    assert restore_dropped_macs(running, running, config=CONFIG) == Decision()
    assert restore_dropped_macs(running, None, config=CONFIG) == Decision()


def test_an_update_does_not_put_back_a_mac_the_user_changed_or_one_we_did_not_record() -> None:
    stored, _ = admit(vmi())
    mine = json.loads(json.dumps(stored))
    mine["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"] = "02:00:00:00:00:01"
    dropped = json.loads(json.dumps(mine))
    del dropped["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"]
    assert restore_dropped_macs(dropped, mine, config=CONFIG).patch == []


SKIP = "bridge-migration.kubevirt.io/skip-multus-bridges"


def _vlan_vmi(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """The seed's Multus case: the pod network plus a bridge NIC on a VLAN network (Harvester's shape)."""
    return vmi(
        interfaces=[{"name": "default", "bridge": {}}, {"name": "vlan7", "bridge": {}}],
        networks=[{"name": "default", "pod": {}}, {"name": "vlan7", "multus": {"networkName": "default/vlan7"}}],
        annotations=annotations,
    )


def test_a_bridge_nic_on_a_multus_network_gets_a_pinned_mac_and_a_record_too() -> None:
    stored, decision = admit(_vlan_vmi())
    ifaces = stored["spec"]["domain"]["devices"]["interfaces"]
    want = {n: pinned_mac(namespace="demo", vmi_name="web-1", interface=n) for n in ("default", "vlan7")}
    assert {i["name"]: i["macAddress"] for i in ifaces} == want
    assert json.loads(stored["metadata"]["annotations"][MACS]) == want
    assert decision.warnings == []


def test_an_opted_out_multus_bridge_keeps_its_spec_and_stays_out_of_the_record() -> None:
    stored, decision = admit(_vlan_vmi({SKIP: "vlan7"}))
    ifaces = stored["spec"]["domain"]["devices"]["interfaces"]
    assert "macAddress" not in ifaces[1]
    assert list(json.loads(stored["metadata"]["annotations"][MACS])) == ["default"]
    assert stored["metadata"]["annotations"][SKIP] == "vlan7"  # the user's, left as written
    assert decision.warnings == []


def test_an_opt_out_naming_no_multus_bridge_says_so_and_skips_nothing() -> None:
    stored, decision = admit(_vlan_vmi({SKIP: "vlan8,default"}))
    assert "macAddress" in stored["spec"]["domain"]["devices"]["interfaces"][1]
    assert len(decision.warnings) == 1
    assert "default, vlan8" in decision.warnings[0] and SKIP in decision.warnings[0]
