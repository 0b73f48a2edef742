"""The fixup plan, decided from domain XML, VMI and annotations alone."""

from __future__ import annotations

from sidecar.plan import make_plan, pod_link_names, targets_from_vmi
from tests.sidecar.samples import (
    GUEST_MAC,
    MACVTAP_IFACE,
    MASQ_IFACE,
    NO_ALIAS_IFACE,
    POD_MAC,
    THREE_NIC_VMI,
    domain_xml,
    vmi,
)


def test_pinned_mac_unchanged_means_a_link_refresh() -> None:
    [plan] = make_plan(domain_xml=domain_xml(), vmi=vmi(), policy="pin", macs={}, pod_macs={"eth0": POD_MAC})
    assert plan.action == "link-refresh"
    assert plan.alias == "ua-default"
    assert plan.current_mac == plan.expected_mac == GUEST_MAC
    assert plan.mac_source == "domain"


def test_follow_pod_with_a_new_pod_mac_means_a_reattach_with_that_mac() -> None:
    [plan] = make_plan(domain_xml=domain_xml(), vmi=vmi(), policy="follow-pod", macs={}, pod_macs={"eth0": POD_MAC})
    assert plan.action == "reattach"
    assert (plan.current_mac, plan.expected_mac, plan.mac_source) == (GUEST_MAC, POD_MAC, "pod")


def test_follow_pod_without_a_pod_mac_falls_back_to_the_domain_mac() -> None:
    [plan] = make_plan(domain_xml=domain_xml(), vmi=vmi(), policy="follow-pod", macs={}, pod_macs={})
    assert plan.action == "link-refresh"


def test_the_macs_annotation_wins_over_the_pod_mac() -> None:
    wanted = "02:11:22:33:44:55"
    [plan] = make_plan(
        domain_xml=domain_xml(),
        vmi=vmi(),
        policy="follow-pod",
        macs={"default": wanted},
        pod_macs={"eth0": POD_MAC},
    )
    assert (plan.action, plan.expected_mac, plan.mac_source) == ("reattach", wanted, "annotation")


def test_the_macs_annotation_equal_to_the_domain_mac_is_a_link_refresh() -> None:
    [plan] = make_plan(domain_xml=domain_xml(), vmi=vmi(), policy="pin", macs={"default": GUEST_MAC}, pod_macs={})
    assert (plan.action, plan.mac_source) == ("link-refresh", "annotation")


def test_keep_never_changes_the_mac() -> None:
    [plan] = make_plan(
        domain_xml=domain_xml(),
        vmi=vmi(),
        policy="keep",
        macs={"default": "02:11:22:33:44:55"},
        pod_macs={"eth0": POD_MAC},
    )
    assert (plan.action, plan.expected_mac) == ("link-refresh", GUEST_MAC)


def test_only_bridge_and_macvtap_interfaces_are_planned() -> None:
    xml = domain_xml(extra=MACVTAP_IFACE + MASQ_IFACE + NO_ALIAS_IFACE)
    plans = make_plan(domain_xml=xml, vmi=THREE_NIC_VMI, policy="pin", macs={}, pod_macs={})
    assert [(p.name, p.action) for p in plans] == [("default", "link-refresh"), ("fast", "link-refresh")]
    assert [p.pod_link for p in plans] == ["eth0", "net1"]


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
    assert [(p.name, p.pod_link) for p in plans] == [("default", "eth0"), ("fast", "net1")]


def test_a_vmi_interface_missing_from_the_domain_is_not_planned() -> None:
    two = vmi(
        interfaces=[{"name": "default", "bridge": {}}, {"name": "gone", "bridge": {}}],
        networks=[{"name": "default", "pod": {}}, {"name": "gone", "pod": {}}],
    )
    plans = make_plan(domain_xml=domain_xml(), vmi=two, policy="pin", macs={}, pod_macs={})
    assert [p.name for p in plans] == ["default"]


def test_pod_links_are_eth0_for_the_pod_network_and_net_n_for_multus() -> None:
    assert pod_link_names(THREE_NIC_VMI["spec"]) == {"default": "eth0", "fast": "net1", "masq": "net2"}


def test_a_malformed_vmi_spec_yields_no_targets_rather_than_an_error() -> None:
    assert targets_from_vmi({"spec": {"domain": "nonsense", "networks": 3}}, domain_xml()) == []
