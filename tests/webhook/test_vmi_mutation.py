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
NIC_REFRESH = "bridge-migration.kubevirt.io/nic-refresh"


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
    # The fixer then uses its own default, auto, whatever --nic-refresh says (it never sees that flag).
    assert any(refresh in w and "using auto" in w for w in decision.warnings)


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


# --- found by mutation testing (docs/testing.md, "Mutation testing") --------------------------------


def _two_nic_vmi(**kw: Any) -> dict[str, Any]:
    return vmi(
        interfaces=[{"name": "default", "bridge": {}}, {"name": "lan", "bridge": {}}],
        networks=[{"name": "default", "pod": {}}, {"name": "lan", "multus": {"networkName": "demo/lan"}}],
        **kw,
    )


def test_the_gate_warning_names_every_interface_left_non_migratable() -> None:
    config = WebhookConfig(sidecar_image=IMAGE, delivery="hook")
    _, off = admit(_two_nic_vmi(), config=config, gate=False)
    assert off.warnings == [
        "bridge-migration: KubeVirt's Sidecar feature gate is off; VMI demo/web-1 (interfaces default, lan) "
        "stays non-migratable. Enable the gate, recreate the VMI."
    ]
    _, unknown = admit(_two_nic_vmi(), config=config, gate=None)
    assert (
        "KubeVirt's Sidecar feature gate could not be read; VMI demo/web-1 (interfaces default, lan)"
        in (unknown.warnings[0])
    )


def test_in_auto_with_the_gate_unread_the_inject_warning_says_it_could_not_be_read() -> None:
    _, decision = admit(_two_nic_vmi(), gate=None)
    (warning,) = decision.warnings
    assert "Sidecar feature gate could not be read; VMI demo/web-1 (interfaces default, lan) is made migratable" in (
        warning
    )
    _, off = admit(_two_nic_vmi(), gate=False)
    assert "Sidecar feature gate is off;" in off.warnings[0]


def test_a_vmi_that_asks_for_inject_itself_gets_no_warning_about_the_gate() -> None:
    stored, decision = admit(vmi(annotations={"bridge-migration.kubevirt.io/delivery": "inject"}), gate=False)
    assert decision.warnings == []
    assert "macAddress" in stored["spec"]["domain"]["devices"]["interfaces"][0]


def test_a_vmi_made_from_generate_name_is_named_as_such_and_seeded_by_its_request() -> None:
    def nameless(uid: str, config: WebhookConfig = CONFIG, gate: bool | None = True) -> Decision:
        obj = {**vmi(), "metadata": {"generateName": "web-", "namespace": "demo"}}
        return mutate_vmi(obj, namespace="demo", config=config, sidecar_gate_on=gate, fallback_name=uid)

    first, second = nameless("uid-1"), nameless("uid-2")
    assert first.patch[0]["value"] == pinned_mac(namespace="demo", vmi_name="uid-1", interface="default")
    assert first.patch[0]["value"] != second.patch[0]["value"]  # two such VMIs never share a MAC
    gated = nameless("uid-1", WebhookConfig(sidecar_image=IMAGE, delivery="hook"), gate=False)
    assert "VMI demo/web-* (interfaces default)" in gated.warnings[0]


def test_an_invalid_mac_on_one_interface_does_not_stop_the_others_being_pinned() -> None:
    obj = _two_nic_vmi()
    obj["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"] = "not-a-mac"
    stored, decision = admit(obj)
    ifaces = stored["spec"]["domain"]["devices"]["interfaces"]
    assert ifaces[0]["macAddress"] == "not-a-mac"  # the user's, for virt-api to refuse
    assert ifaces[1]["macAddress"] == pinned_mac(namespace="demo", vmi_name="web-1", interface="lan")
    assert decision.warnings == ["bridge-migration: interface default has an invalid macAddress; not pinned"]


def test_an_opt_out_of_every_multus_bridge_says_nothing() -> None:
    _, decision = admit(_vlan_vmi({SKIP: "*"}))
    assert decision.warnings == []


def test_the_opt_out_warning_names_the_vmi_and_the_multus_networks() -> None:
    _, decision = admit(_vlan_vmi({SKIP: "vlan8"}))
    assert decision.warnings == [
        f"bridge-migration: annotation {SKIP} names vlan8, which VMI demo/web-1 has no bridge interface"
        " on a Multus network for; nothing skipped for them"
    ]


def test_a_prefixed_opt_out_annotation_is_read_under_that_prefix() -> None:
    config = WebhookConfig(sidecar_image=IMAGE, keys=AnnotationKeys("acme.io/"))
    stored, _ = admit(_vlan_vmi({"acme.io/skip-multus-bridges": "vlan7"}), config=config)
    assert "macAddress" not in stored["spec"]["domain"]["devices"]["interfaces"][1]
    assert list(json.loads(stored["metadata"]["annotations"]["acme.io/macs"])) == ["default"]


def test_our_sidecar_entry_uses_the_configured_pull_policy() -> None:
    stored, _ = admit(vmi(), config=WebhookConfig(sidecar_image=IMAGE, sidecar_pull_policy="Always"))
    [ours] = sidecars(stored)
    assert ours["imagePullPolicy"] == "Always"


def test_with_the_hook_the_vmi_gets_exactly_the_sidecar_the_pin_the_allow_annotation_and_the_record() -> None:
    stored, _ = admit(vmi())
    assert sorted(stored["metadata"]["annotations"]) == sorted(
        [HOOK_SIDECARS, ALLOW_POD_BRIDGE_MIGRATION, MACS, POLICY, NIC_REFRESH]
    )


def test_a_bridge_on_a_multus_network_alone_gets_no_pod_network_allow_annotation() -> None:
    only_multus = vmi(
        interfaces=[{"name": "default", "masquerade": {}}, {"name": "vlan7", "bridge": {}}],
        networks=[{"name": "default", "pod": {}}, {"name": "vlan7", "multus": {"networkName": "default/vlan7"}}],
    )
    stored, _ = admit(only_multus)
    assert ALLOW_POD_BRIDGE_MIGRATION not in stored["metadata"]["annotations"]
    assert "macAddress" in stored["spec"]["domain"]["devices"]["interfaces"][1]


def test_a_macs_record_the_user_started_keeps_their_entries_and_gets_the_missing_ones() -> None:
    mine = "02:00:00:00:00:aa"
    stored, _ = admit(_two_nic_vmi(annotations={MACS: json.dumps({"default": mine})}))
    pinned_lan = pinned_mac(namespace="demo", vmi_name="web-1", interface="lan")
    assert json.loads(stored["metadata"]["annotations"][MACS]) == {"default": mine, "lan": pinned_lan}
    assert stored["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"] == mine


def test_an_update_keeps_a_mac_the_user_changed_while_ours_was_recorded() -> None:
    stored, _ = admit(vmi())
    changed = json.loads(json.dumps(stored))
    changed["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"] = "02:00:00:00:00:01"
    assert restore_dropped_macs(changed, stored, config=CONFIG).patch == []


def test_an_update_puts_back_a_dropped_mac_on_a_later_interface_too() -> None:
    stored, _ = admit(_two_nic_vmi())
    dropped = json.loads(json.dumps(stored))
    del dropped["spec"]["domain"]["devices"]["interfaces"][1]["macAddress"]  # the first one is still there
    decision = restore_dropped_macs(dropped, stored, config=CONFIG)
    assert jsonpatch.apply_patch(dropped, decision.patch) == stored


def test_an_update_of_objects_without_metadata_or_interfaces_puts_nothing_back() -> None:
    stored, _ = admit(vmi())
    shapes: list[dict[str, Any]] = [{"spec": {}}, {"spec": {"domain": {}}}, {"spec": {"domain": {"devices": {}}}}]
    for new in shapes:
        assert restore_dropped_macs(new, stored, config=CONFIG) == Decision()
    assert restore_dropped_macs(vmi(), {"spec": stored["spec"]}, config=CONFIG) == Decision()


def test_a_vmi_with_neither_name_nor_generate_name_is_still_answered() -> None:
    # The apiserver refuses it after admission; until then the warning names what it can.
    nameless = {**vmi(), "metadata": {"namespace": "demo"}}
    decision = mutate_vmi(
        nameless,
        namespace="demo",
        config=WebhookConfig(sidecar_image=IMAGE, delivery="hook"),
        sidecar_gate_on=False,
        fallback_name="uid-1",
    )
    assert "VMI demo/* (interfaces default)" in decision.warnings[0]


def test_an_inject_vmi_records_the_interfaces_its_fixer_may_touch_and_a_hook_vmi_needs_no_record() -> None:
    # The injected fixer sees no VMI: this record is how it tells a bridge NIC from a masquerade
    # tap (virt-controller copies it to the launcher pod, facts L2).
    mixed = vmi(
        interfaces=[{"name": "default", "masquerade": {}}, {"name": "lan", "bridge": {}}],
        networks=[{"name": "default", "pod": {}}, {"name": "lan", "multus": {"networkName": "lan"}}],
        annotations={"bridge-migration.kubevirt.io/delivery": "inject"},
    )
    stored, _ = admit(mixed, gate=False)
    assert stored["metadata"]["annotations"]["bridge-migration.kubevirt.io/interfaces"] == "lan"
    hooked, _ = admit(vmi())
    assert "bridge-migration.kubevirt.io/interfaces" not in hooked["metadata"]["annotations"]
