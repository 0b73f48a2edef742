"""The seed's Multus case: a bridge NIC on a Multus network (net1), refreshed after migration.

Both VMs have a NIC on net1 and the client pings the server over it, before and after the live
migration, in the two IPAM modes of lab.l2:

- kept: one L2 stretched across the nodes (a bridge per node, uplinked into a switch) with the
  network's own DHCP server (dnsmasq); the pod interface has no address, so virt-launcher serves
  no DHCP there (facts M2) and the guest keeps its address;
- per-node: a subnet per node, as flannel through Multus gives; the pod interface has the node's
  address, so virt-launcher's DHCP server (the lab's stand-in) serves it and the guest must take
  the target pod's.

The controls run without the sidecar: what users of bridge on Multus see today.
"""

from __future__ import annotations

import ipaddress

import pytest

from lab.dhcp import server_ip
from lab.l2 import KEPT_SUBNET
from lab.scenario import MigrationOutcome, ScenarioResult, run_scenario
from tests.lab.assertions import assert_migrated_the_kubevirt_way

pytestmark = pytest.mark.lab

NET1_INDEX = 1  # the VMI's second interface: virt-launcher's server there is 169.254.75.11


def _run(kind: str, **kwargs: object) -> ScenarioResult:
    result = run_scenario(kind, say=print, **kwargs)  # type: ignore[arg-type]
    print(result.timelines())
    return result


def _net1(outcome: MigrationOutcome) -> str:
    (nic,) = [nic for nic, ip in outcome.target_ips.items() if ip == outcome.net1_ip]
    return nic


def _assert_net1_renewed_and_pings(outcome: MigrationOutcome, *, first_mac: str, server: str) -> None:
    nic = _net1(outcome)
    ack, reply = outcome.nic_acks[nic], outcome.nic_replies[nic]
    assert ack is not None, f"{nic} never renewed its net1 lease after the migration"
    assert ack.fields["ip"] == f"{outcome.net1_ip}/24"
    assert ack.fields["mac"] == first_mac, "the guest's net1 MAC changed"
    assert ack.fields["server"] == server
    # The Debian guest's observer reports the ack when networkd wrote its lease file, up to a
    # second after the address was on the NIC (addr-add): the reply counts from the latter.
    added = [
        e for e in outcome.guest_events if e.kind == "addr-add" and e.nic == nic and e.fields["ip"] == ack.fields["ip"]
    ]
    since = added[-1] if added and added[-1].precedes(ack) else ack
    assert reply is not None and reply.after(since), f"no ping over net1 ({nic}) after the renewal"
    assert outcome.net1_stun_ms is not None


def _net1_fixup(outcome: MigrationOutcome) -> dict[str, str]:
    (fixup,) = [f for f in outcome.fixups if not f.get("dryRun")]
    # The busybox guest has no agent: the fixer says it could not check (the Debian runs below are verified).
    assert fixup["result"] == "unverified", fixup
    (net1,) = [i for i in fixup["interfaces"] if i["name"] == "net1"]
    return net1  # type: ignore[no-any-return]


def test_kept_the_guest_renews_the_same_address_from_the_networks_server_and_the_switch_moves_its_mac() -> None:
    result = _run("net1-kept")
    (outcome,) = result.migrations
    assert_migrated_the_kubevirt_way(outcome)
    nic = _net1(outcome)
    assert outcome.net1_ip is not None and ipaddress.IPv4Address(outcome.net1_ip) in KEPT_SUBNET
    assert result.first_addresses[nic] == f"{outcome.net1_ip}/24", "the network's server gave another address"
    _assert_net1_renewed_and_pings(outcome, first_mac=result.first_macs[nic], server=str(KEPT_SUBNET[1]))
    net1 = _net1_fixup(outcome)
    assert net1["action"] == "link-refresh"
    assert "the network's own DHCP server" in net1["reason"]
    assert outcome.net1_switch_port == "port-b", "the switch still sends the guest's frames to node a"
    assert result.final_domain_macs["net1"] == result.first_macs[nic]


def test_per_node_the_guest_takes_the_target_pods_address_from_virt_launchers_server() -> None:
    result = _run("net1-per-node")
    (outcome,) = result.migrations
    assert_migrated_the_kubevirt_way(outcome)
    nic = _net1(outcome)
    assert outcome.net1_ip is not None and outcome.net1_ip.startswith("10.246.2.")
    _assert_net1_renewed_and_pings(outcome, first_mac=result.first_macs[nic], server=server_ip(NET1_INDEX))
    assert _net1_fixup(outcome)["action"] == "link-refresh"
    assert result.final_addresses[nic] == f"{outcome.net1_ip}/24"


def test_per_node_control_without_the_sidecar_the_guest_keeps_its_old_subnet_and_net1_is_dead() -> None:
    result = _run("net1-per-node-control", observe=20.0)
    (outcome,) = result.migrations
    nic = _net1(outcome)
    assert outcome.nic_acks[nic] is None
    assert outcome.nic_replies[nic] is None, "net1 worked without any fixup: the lab does not reproduce the bug"
    assert outcome.net1_stun_ms is None
    assert result.final_addresses[nic] is not None and result.final_addresses[nic].startswith("10.246.1.")


def test_kept_control_without_the_sidecar_net1_comes_back_by_qemus_announce_but_the_pod_network_does_not() -> None:
    """What users see today on a VLAN-like network: the address stays valid, and QEMU's own
    announce after the migration (facts M9) moves the switch's entry; no lease is renewed."""
    result = _run("net1-kept-control", observe=20.0)
    (outcome,) = result.migrations
    nic = _net1(outcome)
    assert outcome.nic_acks[nic] is None
    assert outcome.nic_replies[nic] is not None
    assert outcome.net1_switch_port == "port-b"
    assert outcome.net1_stun_ms is not None
    assert outcome.first_reply is None  # eth0, on the pod network, is stranded as ever


@pytest.mark.parametrize("kind", ["net1-kept", "net1-per-node"])
def test_with_systemd_networkd_both_ipam_modes_recover_over_net1(kind: str) -> None:
    result = _run(kind, guest="debian-networkd")
    (outcome,) = result.migrations
    nic = _net1(outcome)
    assert nic.startswith("ens"), "not udev's predictable name: is this the Debian guest?"
    server = str(KEPT_SUBNET[1]) if kind == "net1-kept" else server_ip(NET1_INDEX)
    _assert_net1_renewed_and_pings(outcome, first_mac=result.first_macs[nic], server=server)
