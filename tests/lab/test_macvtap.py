"""macvtap as KubeVirt plumbs it (issue 27): the binding plugin's NIC across a live migration.

The lab's macvtap network is a real macvtap (mode bridge) per pod on each node's uplink, one L2
behind the uplinks with its own DHCP server (lab.l2), a pinned MAC on both pods' devices (facts
V2-V6). The control is what users see today (KubeVirt issue 5912, facts V7): the gateway gets the
VM back at once, a neighbour on the source node only once the source pod is gone. With the node
agent's release the neighbour gets it back as soon as the domain has left.
"""

from __future__ import annotations

import ipaddress

import pytest

from lab.l2 import MACVTAP_SUBNET
from lab.macvtap import run_macvtap_migration

pytestmark = pytest.mark.lab

LINGER_S = 8.0


def test_control_the_stale_source_device_swallows_the_neighbours_traffic_until_the_source_pod_goes() -> None:
    run = run_macvtap_migration(release=False, linger_s=LINGER_S, say=print)
    assert ipaddress.IPv4Address(run.address) in MACVTAP_SUBNET
    assert run.mac_after == run.mac_before, "the guest's macvtap MAC changed across the migration"
    assert run.gateway_stun_ms is not None and run.gateway_stun_ms < 3000, run
    # The bug as 5912 reports it: the neighbour is cut off while the source pod lives.
    assert run.neighbour_back_after_resume_ms is not None, "the neighbour never got the VM back"
    assert run.neighbour_back_after_resume_ms >= LINGER_S * 1000 * 0.9, run
    assert run.released == []


def test_the_node_agent_releases_the_stale_device_and_the_fixer_leaves_the_macvtap_nic_alone() -> None:
    run = run_macvtap_migration(release=True, linger_s=LINGER_S, say=print)
    assert run.mac_after == run.mac_before
    assert run.gateway_stun_ms is not None and run.gateway_stun_ms < 3000, run
    assert run.neighbour_back_after_resume_ms is not None, "the neighbour never got the VM back"
    # Well before the source pod goes: the agent set the stale device down.
    assert run.neighbour_back_after_resume_ms < 3000, run
    assert any("released" in line for line in run.released), run.released
    # On the target the pinned MAC and the address stay valid: the fixer changes nothing there.
    assert run.fixup_actions.get("mvt") == "none", run.fixup_actions


def test_without_a_pinned_mac_the_fixer_reattaches_the_nic_with_the_target_devices_mac() -> None:
    """A VMI admitted before the add-on: no spec MAC, so each pod's macvtap has its own MAC (V6) and
    the guest's (the source device's) is not delivered on the target. The fixer reattaches the NIC
    with the target device's MAC through the real unmanaged macvtap, and the guest leases anew."""
    run = run_macvtap_migration(release=False, linger_s=2.0, policy="keep", say=print)
    assert run.mac_before != run.target_device_mac, "the lab gave both pods' devices one MAC"
    assert run.fixup_actions.get("mvt") == "reattach", run.fixup_actions
    assert run.mac_after == run.target_device_mac, run
    assert run.address_after is not None and ipaddress.IPv4Address(run.address_after) in MACVTAP_SUBNET
    assert run.gateway_reaches_after, f"the gateway does not reach the guest at {run.address_after}"
