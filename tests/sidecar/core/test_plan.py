"""The fixup plan, decided from domain XML, VMI and annotations alone."""

from __future__ import annotations

from typing import Any

import msgspec

from bridge_migration_contract import MAC_POLICIES, NIC_REFRESHES
from sidecar.core.plan import (
    hashed_pod_interface_name,
    known_interface_names,
    make_plan,
    pod_link_names,
    targets_from_vmi,
)
from tests.sidecar.samples import (
    GUEST_MAC,
    MACVTAP_IFACE,
    MASQ_IFACE,
    NO_ALIAS_IFACE,
    POD_MAC,
    THREE_NIC_VMI,
    VLAN_IFACE,
    VLAN_VMI,
    domain_xml,
    vmi,
)


def test_pinned_mac_unchanged_means_a_link_refresh() -> None:
    [plan] = make_plan(domain_xml=domain_xml(), vmi=vmi(), policy="pin", macs={}, pod_macs={"eth0": POD_MAC})
    assert plan.action == "link-refresh"
    assert plan.alias == "ua-default"
    assert plan.current_mac == plan.expected_mac == GUEST_MAC
    assert plan.mac_source == "domain"


# KubeVirt's DHCP server answers one MAC (docs/kubevirt-facts.md D2): the spec's, then (v1.9+)
# the VMI status's, then the pod's. The plan follows it whatever the policy, and says so.
OLD, NEW = "v1.5-v1.8", "v1.9+"


def test_on_v1_8_without_a_spec_mac_the_pod_mac_is_served_so_follow_pod_reattaches() -> None:
    [plan] = make_plan(
        domain_xml=domain_xml(), vmi=vmi(), policy="follow-pod", macs={}, pod_macs={"eth0": POD_MAC}, family=OLD
    )
    assert plan.action == "reattach"
    assert (plan.current_mac, plan.expected_mac, plan.mac_source) == (GUEST_MAC, POD_MAC, "pod")
    assert "not possible" not in plan.reason


def test_on_v1_8_keep_cannot_keep_the_mac_and_the_reason_says_why() -> None:
    [plan] = make_plan(
        domain_xml=domain_xml(), vmi=vmi(), policy="keep", macs={}, pod_macs={"eth0": POD_MAC}, family=OLD
    )
    assert (plan.action, plan.expected_mac, plan.mac_source) == ("reattach", POD_MAC, "pod")
    assert "keep is not possible" in plan.reason


def test_on_v1_9_the_status_mac_is_served_so_keep_refreshes_the_link() -> None:
    status = {**vmi(), "status": {"interfaces": [{"name": "default", "mac": GUEST_MAC.upper()}]}}
    [plan] = make_plan(
        domain_xml=domain_xml(), vmi=status, policy="keep", macs={}, pod_macs={"eth0": POD_MAC}, family=NEW
    )
    assert (plan.action, plan.expected_mac, plan.mac_source) == ("link-refresh", GUEST_MAC, "status")


def test_on_v1_9_follow_pod_keeps_the_status_mac_and_the_reason_says_why() -> None:
    status = {**vmi(), "status": {"interfaces": [{"name": "default", "mac": GUEST_MAC}]}}
    [plan] = make_plan(
        domain_xml=domain_xml(), vmi=status, policy="follow-pod", macs={}, pod_macs={"eth0": POD_MAC}, family=NEW
    )
    assert (plan.action, plan.mac_source) == ("link-refresh", "status")
    assert "follow-pod is not possible" in plan.reason


def test_on_v1_9_without_a_vmi_status_the_domain_mac_stands_for_it() -> None:
    [plan] = make_plan(
        domain_xml=domain_xml(), vmi=vmi(), policy="follow-pod", macs={}, pod_macs={"eth0": POD_MAC}, family=NEW
    )
    assert (plan.action, plan.expected_mac, plan.mac_source) == ("link-refresh", GUEST_MAC, "domain")


def test_without_a_pod_mac_on_v1_8_the_domain_mac_is_kept() -> None:
    [plan] = make_plan(domain_xml=domain_xml(), vmi=vmi(), policy="follow-pod", macs={}, pod_macs={}, family=OLD)
    assert (plan.action, plan.mac_source) == ("link-refresh", "domain")


def test_the_spec_mac_is_served_on_both_families() -> None:
    wanted = "02:11:22:33:44:55"
    spec = vmi(interfaces=[{"name": "default", "bridge": {}, "macAddress": wanted.upper()}])
    for family in (OLD, NEW):
        [plan] = make_plan(
            domain_xml=domain_xml(), vmi=spec, policy="keep", macs={}, pod_macs={"eth0": POD_MAC}, family=family
        )
        assert (plan.action, plan.expected_mac, plan.mac_source) == ("reattach", wanted, "spec")


def test_the_macs_annotation_wins_over_the_pod_mac() -> None:
    wanted = "02:11:22:33:44:55"
    for family in (OLD, NEW):
        [plan] = make_plan(
            domain_xml=domain_xml(),
            vmi=vmi(),
            policy="follow-pod",
            macs={"default": wanted},
            pod_macs={"eth0": POD_MAC},
            family=family,
        )
        assert (plan.action, plan.expected_mac, plan.mac_source) == ("reattach", wanted, "annotation")


def test_the_macs_annotation_equal_to_the_domain_mac_is_a_link_refresh() -> None:
    [plan] = make_plan(domain_xml=domain_xml(), vmi=vmi(), policy="pin", macs={"default": GUEST_MAC}, pod_macs={})
    assert (plan.action, plan.mac_source) == ("link-refresh", "annotation")


def test_only_bridge_and_macvtap_interfaces_are_planned() -> None:
    xml = domain_xml(extra=MACVTAP_IFACE + MASQ_IFACE + NO_ALIAS_IFACE)
    plans = make_plan(domain_xml=xml, vmi=THREE_NIC_VMI, policy="pin", macs={}, pod_macs={})
    # No pod link to read and no pinned MAC: nothing the macvtap NIC could be changed to.
    assert [(p.name, p.action) for p in plans] == [("default", "link-refresh"), ("fast", "none")]
    assert [p.pod_link for p in plans] == ["eth0", FAST]
    assert plans[1].reason.startswith("macvtap: the target's macvtap device cannot be read here")


def test_a_subset_of_interfaces_can_be_asked_for() -> None:
    xml = domain_xml(extra=MACVTAP_IFACE)
    plans = make_plan(domain_xml=xml, vmi=THREE_NIC_VMI, policy="pin", macs={}, pod_macs={}, only={"fast"})
    assert [p.name for p in plans] == ["fast"]


def test_an_interface_the_vmi_wants_down_is_left_alone() -> None:
    down = vmi(interfaces=[{"name": "default", "bridge": {}, "state": "down"}])
    [plan] = make_plan(domain_xml=domain_xml(), vmi=down, policy="pin", macs={}, pod_macs={})
    assert plan.action == "none"


def test_without_a_vmi_every_ua_ethernet_bridge_or_direct_interface_is_planned() -> None:
    xml = domain_xml(extra=MACVTAP_IFACE + NO_ALIAS_IFACE)
    plans = make_plan(domain_xml=xml, vmi=None, policy="pin", macs={}, pod_macs={"eth0": POD_MAC})
    assert [(p.name, p.pod_link) for p in plans] == [("default", "eth0"), ("fast", FAST)]
    # A pod made by an older KubeVirt has ordinal names; the plan takes them when it sees them.
    plans = make_plan(domain_xml=xml, vmi=None, policy="pin", macs={}, pod_macs={"eth0": POD_MAC, "net1": POD_MAC})
    assert [(p.name, p.pod_link) for p in plans] == [("default", "eth0"), ("fast", "net1")]


def test_a_vmi_interface_missing_from_the_domain_is_not_planned() -> None:
    two = vmi(
        interfaces=[{"name": "default", "bridge": {}}, {"name": "gone", "bridge": {}}],
        networks=[{"name": "default", "pod": {}}, {"name": "gone", "pod": {}}],
    )
    plans = make_plan(domain_xml=domain_xml(), vmi=two, policy="pin", macs={}, pod_macs={})
    assert [p.name for p in plans] == ["default"]


# KubeVirt's naming scheme (docs/kubevirt-facts.md D5): "pod" + sha256(network name)[:11].
FAST, MASQ = hashed_pod_interface_name("fast"), hashed_pod_interface_name("masq")


def test_pod_links_are_eth0_for_the_pod_network_and_kubevirts_hashed_names_for_multus() -> None:
    assert pod_link_names(THREE_NIC_VMI) == {"default": "eth0", "fast": FAST, "masq": MASQ}
    # The value KubeVirt's own namescheme tests expect for a network called "network1".
    assert hashed_pod_interface_name("network1") == "poda7662f44d65"


def test_ordinal_names_only_where_the_pod_has_them_and_the_hashed_one_is_absent() -> None:
    assert pod_link_names(THREE_NIC_VMI, present={"eth0", "net1", "net2"}) == {
        "default": "eth0",
        "fast": "net1",
        "masq": "net2",
    }
    assert pod_link_names(THREE_NIC_VMI, present={"eth0", FAST, "net1"})["fast"] == FAST


def test_the_pod_interface_name_in_the_vmi_status_wins() -> None:
    reported = {**THREE_NIC_VMI, "status": {"interfaces": [{"name": "default", "podInterfaceName": "ovn-udn1"}]}}
    assert pod_link_names(reported)["default"] == "ovn-udn1"


def test_a_malformed_vmi_spec_yields_no_targets_rather_than_an_error() -> None:
    assert targets_from_vmi({"spec": {"domain": "nonsense", "networks": 3}}, domain_xml()) == []


def test_a_spec_mac_in_dot_form_is_the_same_mac_so_a_link_refresh() -> None:
    dotted = GUEST_MAC.replace(":", "")
    spec = vmi(interfaces=[{"name": "default", "bridge": {}, "macAddress": f"{dotted[:4]}.{dotted[4:8]}.{dotted[8:]}"}])
    [plan] = make_plan(domain_xml=domain_xml(), vmi=spec, policy="pin", macs={}, pod_macs={"eth0": POD_MAC})
    assert (plan.action, plan.expected_mac, plan.mac_source) == ("link-refresh", GUEST_MAC, "spec")


def test_nic_refresh_reattach_turns_a_link_refresh_into_a_reattach_with_the_same_mac() -> None:
    """For guests that ignore a short carrier loss (NetworkManager waits 6 s; docs/sidecar.md)."""
    [plan] = make_plan(
        domain_xml=domain_xml(), vmi=vmi(), policy="pin", macs={}, pod_macs={"eth0": POD_MAC}, refresh="reattach"
    )
    assert (plan.action, plan.current_mac, plan.expected_mac) == ("reattach", GUEST_MAC, GUEST_MAC)
    assert "reattach requested (nic-refresh)" in plan.reason
    # A NIC the user wants down stays down whatever the refresh mode.
    down = vmi(interfaces=[{"name": "default", "bridge": {}, "state": "down"}])
    [plan] = make_plan(domain_xml=domain_xml(), vmi=down, policy="pin", macs={}, pod_macs={}, refresh="reattach")
    assert plan.action == "none"


VLAN_LINK = hashed_pod_interface_name("vlan7")
TARGET_POD_MAC = "0a:58:0a:f6:02:0b"


def test_a_multus_bridge_whose_pod_has_an_ipv4_follows_kubevirts_dhcp_rule_like_the_pod_network() -> None:
    """The CNI gave the pod an address (flannel-like IPAM): virt-launcher serves DHCP there (M2),
    and on v1.8 without a spec MAC it answers the target pod's MAC only."""
    xml = domain_xml(extra=VLAN_IFACE)
    pods = {"eth0": POD_MAC, VLAN_LINK: TARGET_POD_MAC}
    plans = make_plan(domain_xml=xml, vmi=VLAN_VMI, policy="follow-pod", macs={}, pod_macs=pods, family="v1.5-v1.8")
    vlan = plans[1]
    assert (vlan.name, vlan.pod_link, vlan.action, vlan.expected_mac) == (
        "vlan7",
        VLAN_LINK,
        "reattach",
        TARGET_POD_MAC,
    )


def test_a_multus_bridge_without_a_pod_ipv4_keeps_the_guests_mac_for_the_networks_own_dhcp_server() -> None:
    """No pod address, so no virt-launcher DHCP (M2): the network's server answers any MAC, and
    a new MAC would cost the guest its lease; the plan refreshes the link and keeps the MAC."""
    xml = domain_xml(extra=VLAN_IFACE)
    pods = {"eth0": POD_MAC, VLAN_LINK: TARGET_POD_MAC}
    plans = make_plan(
        domain_xml=xml,
        vmi=VLAN_VMI,
        policy="follow-pod",
        macs={},
        pod_macs=pods,
        family="v1.5-v1.8",
        ipv4_less={VLAN_LINK},
    )
    assert [(p.name, p.action) for p in plans] == [("default", "reattach"), ("vlan7", "link-refresh")]
    assert plans[1].expected_mac == "02:00:00:aa:bb:07"
    assert "network's own DHCP server" in plans[1].reason


def test_a_pinned_multus_bridge_is_a_link_refresh_and_the_opt_out_drops_it() -> None:
    xml = domain_xml(extra=VLAN_IFACE)
    macs = {"default": GUEST_MAC, "vlan7": "02:00:00:aa:bb:07"}
    plans = make_plan(domain_xml=xml, vmi=VLAN_VMI, policy="pin", macs=macs, pod_macs={}, ipv4_less={VLAN_LINK})
    assert [(p.name, p.action, p.mac_source) for p in plans] == [
        ("default", "link-refresh", "annotation"),
        ("vlan7", "link-refresh", "domain"),
    ]
    for skip in ("*", frozenset({"vlan7"})):
        kept = make_plan(domain_xml=xml, vmi=VLAN_VMI, policy="pin", macs=macs, pod_macs={}, skip=skip)
        assert [p.name for p in kept] == ["default"]


def test_without_a_vmi_the_opt_out_still_applies_by_name_or_keeps_only_the_first_nic() -> None:
    xml = domain_xml(extra=VLAN_IFACE)
    assert [p.name for p in make_plan(domain_xml=xml, vmi=None, policy="pin", macs={}, pod_macs={}, skip="*")] == [
        "default"
    ]
    named = make_plan(domain_xml=xml, vmi=None, policy="pin", macs={}, pod_macs={}, skip=frozenset({"vlan7"}))
    assert [p.name for p in named] == ["default"]


# --- found by mutation testing (docs/testing.md, "Mutation testing") --------------------------------


def test_the_pod_network_is_served_by_kubevirts_dhcp_even_without_a_pod_ipv4() -> None:
    """Only a bridge on a Multus network has the network's own DHCP server; the pod network always
    has virt-launcher's, so on v1.8 without a spec MAC its NIC takes the target pod's MAC."""
    [plan] = make_plan(
        domain_xml=domain_xml(),
        vmi=vmi(),
        policy="follow-pod",
        macs={},
        pod_macs={"eth0": POD_MAC},
        family="v1.5-v1.8",
        ipv4_less={"eth0"},
    )
    assert (plan.action, plan.expected_mac, plan.mac_source) == ("reattach", POD_MAC, "pod")
    assert plan.reason == f"MAC {GUEST_MAC} -> {POD_MAC} (pod)"


def test_an_unpinned_macvtap_nic_takes_the_devices_mac_whatever_the_family_policy_or_pod_ipv4() -> None:
    """No DHCP from virt-launcher on a plugin NIC (facts V4): KubeVirt's MAC rule plays no part;
    the target's macvtap device delivers its own MAC only (V6), so that is the MAC to take."""
    fast_link = hashed_pod_interface_name("fast")
    xml = domain_xml(extra=MACVTAP_IFACE + MASQ_IFACE)
    for family in (OLD, NEW):
        for policy in MAC_POLICIES:
            plans = make_plan(
                domain_xml=xml,
                vmi=THREE_NIC_VMI,
                policy=policy,
                macs={},
                pod_macs={"eth0": POD_MAC, fast_link: TARGET_POD_MAC},
                family=family,
                ipv4_less={fast_link},
            )
            fast = next(p for p in plans if p.name == "fast")
            assert (fast.pod_link, fast.action, fast.expected_mac, fast.mac_source) == (
                fast_link,
                "reattach",
                TARGET_POD_MAC,
                "pod",
            )


def test_with_a_vmi_a_pod_that_only_has_the_legacy_ordinal_name_is_planned_on_it() -> None:
    xml = domain_xml(extra=VLAN_IFACE)
    plans = make_plan(
        domain_xml=xml, vmi=VLAN_VMI, policy="pin", macs={}, pod_macs={"eth0": POD_MAC, "net1": TARGET_POD_MAC}
    )
    assert [(p.name, p.pod_link) for p in plans] == [("default", "eth0"), ("vlan7", "net1")]


def test_networks_of_other_kinds_or_without_a_name_do_not_hide_the_ones_after_them() -> None:
    odd = vmi(
        networks=[
            "not-an-object",  # type: ignore[list-item]
            {"pod": {}},
            {"name": "gpu", "hostDevice": {}},
            {"name": "default", "pod": {}},
            {"name": "vlan7", "multus": {"networkName": "default/vlan7"}},
        ]
    )
    assert pod_link_names(odd) == {"default": "eth0", "vlan7": VLAN_LINK}
    assert pod_link_names({"spec": None}) == {}


def test_a_vmi_with_a_spec_that_is_no_object_falls_back_to_the_domain_guess() -> None:
    assert [(t.name, t.pod_link) for t in targets_from_vmi({"spec": "garbage"}, domain_xml())] == [("default", "eth0")]


def test_without_a_vmi_a_nic_libvirt_named_itself_is_not_guessed_as_ours() -> None:
    libvirts_own = """<interface type='bridge'>
      <mac address='52:54:00:00:00:0a'/>
      <source bridge='virbr0'/>
      <alias name='net0'/>
    </interface>"""
    plans = make_plan(domain_xml=domain_xml(extra=libvirts_own), vmi=None, policy="pin", macs={}, pod_macs={})
    assert [p.alias for p in plans] == ["ua-default"]


def test_a_bad_spec_mac_on_one_interface_does_not_hide_the_next_ones() -> None:
    wanted = "02:11:22:33:44:66"
    spec = {
        **VLAN_VMI,
        "spec": {
            **VLAN_VMI["spec"],
            "domain": {
                "devices": {
                    "interfaces": [
                        {"name": "default", "bridge": {}, "macAddress": "zz:zz"},
                        {"name": "vlan7", "bridge": {}, "macAddress": wanted},
                    ]
                }
            },
        },
    }
    plans = make_plan(domain_xml=domain_xml(extra=VLAN_IFACE), vmi=spec, policy="pin", macs={}, pod_macs={})
    assert [(p.name, p.expected_mac, p.mac_source) for p in plans] == [
        ("default", GUEST_MAC, "domain"),
        ("vlan7", wanted, "spec"),
    ]


def test_status_entries_that_are_not_strings_are_ignored() -> None:
    status = {**vmi(), "status": {"interfaces": [{"name": "default", "mac": 5}, {"name": None, "mac": POD_MAC}]}}
    [plan] = make_plan(domain_xml=domain_xml(), vmi=status, policy="pin", macs={}, pod_macs={}, family=NEW)
    assert (plan.expected_mac, plan.mac_source) == (GUEST_MAC, "domain")


def test_the_reason_says_only_what_the_policy_could_not_do() -> None:
    # pin on v1.9 from the domain MAC: nothing to excuse; follow-pod there: it says why it could not.
    [pinned] = make_plan(domain_xml=domain_xml(), vmi=vmi(), policy="pin", macs={}, pod_macs={}, family=NEW)
    assert pinned.reason == "MAC unchanged (domain)"
    [follow] = make_plan(domain_xml=domain_xml(), vmi=vmi(), policy="follow-pod", macs={}, pod_macs={}, family=NEW)
    assert follow.reason == (
        "MAC unchanged (domain); follow-pod is not possible: KubeVirt v1.9+ serves DHCP to the VMI status MAC"
    )


def test_an_interface_the_vmi_wants_down_says_so() -> None:
    down = vmi(interfaces=[{"name": "default", "bridge": {}, "state": "down"}])
    [plan] = make_plan(domain_xml=domain_xml(), vmi=down, policy="pin", macs={}, pod_macs={})
    assert (plan.action, plan.reason) == ("none", "the VMI asks for this link to be down")


def test_a_domain_interface_without_a_mac_is_left_alone_and_the_reason_says_why() -> None:
    no_mac = domain_xml().replace(f"<mac address='{GUEST_MAC}'/>", "")
    [plan] = make_plan(domain_xml=no_mac, vmi=vmi(), policy="pin", macs={}, pod_macs={})
    assert (plan.action, plan.current_mac, plan.expected_mac) == ("none", None, None)
    assert plan.reason == "the domain interface has no MAC"


def test_the_names_a_caller_may_ask_a_fixup_for_are_the_looked_after_nics_in_the_domain() -> None:
    xml = domain_xml(extra=MACVTAP_IFACE + MASQ_IFACE)
    assert known_interface_names(THREE_NIC_VMI, xml) == ["default", "fast"]
    assert known_interface_names(THREE_NIC_VMI, domain_xml()) == ["default"]  # fast is not in the domain
    assert known_interface_names(THREE_NIC_VMI, xml, skip="*") == ["default", "fast"]  # * is Multus bridges only
    assert known_interface_names(VLAN_VMI, domain_xml(extra=VLAN_IFACE), skip="*") == ["default"]
    assert known_interface_names(None, xml) == ["default", "fast", "masq"]  # guessed: every ua- NIC


def test_without_a_vmi_an_ethernet_nic_without_an_alias_is_not_guessed() -> None:
    unnamed = "<interface type='ethernet'><mac address='52:54:00:00:00:0b'/><target dev='tap9'/></interface>"
    plans = make_plan(domain_xml=domain_xml(extra=unnamed), vmi=None, policy="pin", macs={}, pod_macs={})
    assert [p.alias for p in plans] == ["ua-default"]


def test_on_v1_8_the_keep_reason_names_the_rule_that_forbids_it() -> None:
    [plan] = make_plan(
        domain_xml=domain_xml(), vmi=vmi(), policy="keep", macs={}, pod_macs={"eth0": POD_MAC}, family=OLD
    )
    assert plan.reason == (
        f"MAC {GUEST_MAC} -> {POD_MAC} (pod); "
        "keep is not possible: KubeVirt v1.5-v1.8 serves DHCP to the pod's MAC only"
    )


LAN_IFACE = """<interface type='ethernet'>
      <mac address='02:00:00:aa:bb:04'/>
      <target dev='tap1' managed='no'/>
      <alias name='ua-lan'/>
    </interface>"""


def test_without_a_vmi_only_the_interfaces_the_webhook_recorded_are_touched() -> None:
    # Inject mode, KubeVirt v1.5-v1.8: masquerade on the pod network ("default", a tap exactly
    # like a bridge NIC's) and a bridge on a Multus network ("lan"). The injected fixer sees no VMI.
    xml = domain_xml(mac="02:00:00:aa:bb:01", extra=LAN_IFACE)
    lan_link = hashed_pod_interface_name("lan")
    pod_macs = {"eth0": POD_MAC, lan_link: "0a:58:0a:f4:01:09"}
    guessed = make_plan(domain_xml=xml, vmi=None, policy="pin", macs={}, pod_macs=pod_macs, family="v1.5-v1.8")
    # What a guess alone does: the masquerade NIC would be re-attached with the pod's MAC.
    assert (guessed[0].name, guessed[0].action, guessed[0].expected_mac) == ("default", "reattach", POD_MAC)
    recorded = make_plan(
        domain_xml=xml, vmi=None, policy="pin", macs={}, pod_macs=pod_macs, family="v1.5-v1.8", recorded={"lan"}
    )
    assert [(p.name, p.pod_link) for p in recorded] == [("lan", lan_link)]  # its link still named by its place
    assert known_interface_names(None, xml, recorded={"lan"}) == ["lan"]
    assert known_interface_names(None, xml, recorded=frozenset()) == []


# Found by mutation testing (docs/testing.md, "Mutation testing"): what the fixup record (the
# status endpoint, the Kubernetes event) says of one interface, and which pod links can be Multus.


def test_the_record_of_an_interface_says_what_was_planned_and_how_it_ended() -> None:
    from sidecar.core.models import InterfaceFixup

    [plan] = make_plan(domain_xml=domain_xml(), vmi=vmi(), policy="pin", macs={}, pod_macs={"eth0": POD_MAC})
    failed = plan.record(result="failed", new_mac=None, error="link down refused")
    assert failed == InterfaceFixup(
        name="default",
        alias="ua-default",
        action="link-refresh",
        reason=plan.reason,
        old_mac=GUEST_MAC,
        new_mac=None,
        mac_source="domain",
        result="failed",
        error="link down refused",
    )
    assert plan.record(result="done", new_mac=GUEST_MAC).error is None
    assert plan.record(result="done", new_mac=GUEST_MAC).new_mac == GUEST_MAC


def test_multus_pod_links_are_kubevirts_hashed_and_legacy_names_not_the_pod_network() -> None:
    from sidecar.core.plan import multus_pod_links

    hashed = hashed_pod_interface_name("lan")
    assert multus_pod_links(["eth0", hashed, "net1", "tap0", "lo"]) == [hashed, "net1"]


# --- macvtap (issue 27; docs/kubevirt-facts.md V2, V4, V6) -------------------------------------------
# The binding plugin's domain NIC is `type='ethernet'` whose target is the macvtap device in the pod
# itself (no tap, no in-pod bridge), under the network's hashed pod interface name.

GUEST_FAST_MAC = "02:00:00:aa:bb:02"
OTHER_DEVICE_MAC = "a6:1c:7d:30:5e:91"  # what a macvtap device made without a spec MAC carries


def macvtap_iface(mac: str = GUEST_FAST_MAC, dev: str = FAST) -> str:
    return f"""<interface type='ethernet'>
      <mac address='{mac}'/>
      <target dev='{dev}' managed='no'/>
      <model type='virtio-non-transitional'/>
      <alias name='ua-fast'/>
    </interface>"""


def pinned_fast_vmi(mac: str = GUEST_FAST_MAC) -> dict[str, Any]:
    fast = {"name": "fast", "binding": {"name": "macvtap"}, "macAddress": mac}
    return vmi(
        interfaces=[{"name": "default", "bridge": {}}, fast],
        networks=[{"name": "default", "pod": {}}, {"name": "fast", "multus": {"networkName": "macvtap-net"}}],
    )


MACVTAP_KEPT = (
    "macvtap: the target's device carries the guest's MAC; the pinned MAC and the address stay valid on the target "
    "(facts V6)"
)


def test_a_macvtap_nic_whose_device_carries_the_guests_mac_is_left_alone_with_the_reason() -> None:
    for policy in MAC_POLICIES:
        plans = make_plan(
            domain_xml=domain_xml(extra=macvtap_iface()),
            vmi=pinned_fast_vmi(),
            policy=policy,
            macs={"default": GUEST_MAC, "fast": GUEST_FAST_MAC},
            pod_macs={"eth0": POD_MAC, FAST: GUEST_FAST_MAC},
        )
        assert [(p.name, p.action) for p in plans] == [("default", "link-refresh"), ("fast", "none")]
        fast = plans[1]
        assert (fast.current_mac, fast.expected_mac, fast.mac_source) == (GUEST_FAST_MAC, GUEST_FAST_MAC, "pod")
        assert fast.reason == MACVTAP_KEPT
        # The fixup record keeps its fields: action none, the reason, the MAC unchanged.
        record = msgspec.to_builtins(fast.record(result="skipped", new_mac=fast.expected_mac))
        assert {k: record[k] for k in ("action", "reason", "oldMac", "newMac", "macSource", "result")} == {
            "action": "none",
            "reason": MACVTAP_KEPT,
            "oldMac": GUEST_FAST_MAC,
            "newMac": GUEST_FAST_MAC,
            "macSource": "pod",
            "result": "skipped",
        }


def test_nic_refresh_auto_or_reattach_does_not_touch_a_macvtap_nic_whose_mac_stays() -> None:
    """The refresh modes are for a lease to renew; on macvtap the lease stays valid (V4, V6). Only
    an explicit ``link`` asks for a renewal (a network giving another address on the target)."""
    actions = {}
    for refresh in NIC_REFRESHES:
        plans = make_plan(
            domain_xml=domain_xml(extra=macvtap_iface()),
            vmi=pinned_fast_vmi(),
            policy="pin",
            macs={},
            pod_macs={"eth0": POD_MAC, FAST: GUEST_FAST_MAC},
            refresh=refresh,
        )
        actions[refresh] = (plans[1].action, plans[1].expected_mac)
    assert actions == {
        "auto": ("none", GUEST_FAST_MAC),
        "reattach": ("none", GUEST_FAST_MAC),
        "link": ("link-refresh", GUEST_FAST_MAC),
    }


def test_a_macvtap_nic_whose_device_carries_another_mac_is_reattached_with_the_devices_mac() -> None:
    unpinned = vmi(
        interfaces=[{"name": "default", "bridge": {}}, {"name": "fast", "binding": {"name": "macvtap"}}],
        networks=[{"name": "default", "pod": {}}, {"name": "fast", "multus": {"networkName": "macvtap-net"}}],
    )
    plans = make_plan(
        domain_xml=domain_xml(extra=macvtap_iface()),
        vmi=unpinned,
        policy="pin",
        macs={},
        pod_macs={"eth0": POD_MAC, FAST: OTHER_DEVICE_MAC},
    )
    fast = plans[1]
    assert (fast.action, fast.current_mac, fast.expected_mac, fast.mac_source) == (
        "reattach",
        GUEST_FAST_MAC,
        OTHER_DEVICE_MAC,
        "pod",
    )
    assert fast.reason == (
        f"MAC {GUEST_FAST_MAC} -> {OTHER_DEVICE_MAC} (pod); macvtap: the target's device delivers frames for its own "
        "MAC only (facts V6)"
    )


def test_the_device_is_read_under_the_domains_target_first_the_vmis_pod_link_second() -> None:
    # A pod still on the legacy ordinal name: the domain's target names the device libvirt uses.
    plans = make_plan(
        domain_xml=domain_xml(extra=macvtap_iface(dev="net1")),
        vmi=pinned_fast_vmi(),
        policy="pin",
        macs={},
        pod_macs={"eth0": POD_MAC, "net1": OTHER_DEVICE_MAC, FAST: GUEST_FAST_MAC},
    )
    assert (plans[1].action, plans[1].expected_mac) == ("reattach", OTHER_DEVICE_MAC)
    # A target the pod lacks: the pod link the VMI names stands for the device.
    plans = make_plan(
        domain_xml=domain_xml(extra=macvtap_iface(dev="gone0")),
        vmi=pinned_fast_vmi(),
        policy="pin",
        macs={},
        pod_macs={"eth0": POD_MAC, FAST: GUEST_FAST_MAC},
    )
    assert (plans[1].action, plans[1].mac_source) == ("none", "pod")


def test_without_the_pods_links_the_pinned_mac_stands_for_the_device() -> None:
    """The node agent cannot read the pod's links; macvtap-cni puts the spec's MAC on the device (V6)."""
    [_, fast] = make_plan(
        domain_xml=domain_xml(extra=macvtap_iface()), vmi=pinned_fast_vmi(), policy="keep", macs={}, pod_macs={}
    )
    assert (fast.action, fast.mac_source, fast.reason) == ("none", "spec", MACVTAP_KEPT)
    # A spec MAC the domain does not carry (the spec changed after the start): the device has the spec's.
    [_, fast] = make_plan(
        domain_xml=domain_xml(extra=macvtap_iface()),
        vmi=pinned_fast_vmi("02:00:00:aa:bb:99"),
        policy="pin",
        macs={},
        pod_macs={},
    )
    assert (fast.action, fast.expected_mac, fast.mac_source) == ("reattach", "02:00:00:aa:bb:99", "spec")


def test_a_macvtap_nic_the_vmi_wants_down_stays_down() -> None:
    down = pinned_fast_vmi()
    down["spec"]["domain"]["devices"]["interfaces"][1]["state"] = "down"
    [_, fast] = make_plan(
        domain_xml=domain_xml(extra=macvtap_iface()),
        vmi=down,
        policy="pin",
        macs={},
        pod_macs={FAST: OTHER_DEVICE_MAC},
    )
    assert (fast.action, fast.reason) == ("none", "the VMI asks for this link to be down")


def test_the_core_macvtap_binding_and_the_plugin_on_the_pod_network_are_not_planned() -> None:
    not_ours = vmi(
        interfaces=[{"name": "default", "binding": {"name": "macvtap"}}, {"name": "fast", "macvtap": {}}],
        networks=[{"name": "default", "pod": {}}, {"name": "fast", "multus": {"networkName": "macvtap-net"}}],
    )
    xml = domain_xml(extra=macvtap_iface())
    assert make_plan(domain_xml=xml, vmi=not_ours, policy="pin", macs={}, pod_macs={FAST: OTHER_DEVICE_MAC}) == []


def test_without_a_vmi_a_nic_on_a_multus_pod_link_itself_is_planned_as_macvtap() -> None:
    """The injected fixer sees no VMI. A bridge NIC's target is a tap beside the pod link; only
    the macvtap plugin's target is the pod's Multus link itself (V2)."""
    xml = domain_xml(extra=macvtap_iface() + VLAN_IFACE)
    pods = {"eth0": POD_MAC, FAST: GUEST_FAST_MAC, VLAN_LINK: TARGET_POD_MAC}
    plans = make_plan(domain_xml=xml, vmi=None, policy="pin", macs={}, pod_macs=pods, family="v1.5-v1.8")
    assert [(p.name, p.pod_link, p.action) for p in plans] == [
        ("default", "eth0", "reattach"),  # bridge: KubeVirt's v1.5-v1.8 rule, the pod's MAC
        ("fast", FAST, "none"),
        ("vlan7", VLAN_LINK, "reattach"),
    ]
    assert plans[1].reason == MACVTAP_KEPT
    pods[FAST] = OTHER_DEVICE_MAC
    plans = make_plan(domain_xml=xml, vmi=None, policy="pin", macs={}, pod_macs=pods, skip="*")
    assert [(p.name, p.action, p.expected_mac) for p in plans] == [
        ("default", "link-refresh", GUEST_MAC),
        ("fast", "reattach", OTHER_DEVICE_MAC),  # the opt-out of Multus bridges never drops a macvtap NIC
    ]
