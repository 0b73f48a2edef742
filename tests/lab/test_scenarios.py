"""The seed's functional test, automated: ping, live-migrate, ping again, on every guest type.

Each test runs one scenario in a fresh two-node lab: a server guest and a client guest that pings
it, both in virt-launcher-shaped pods on node a; the client live-migrates (peer-to-peer,
KubeVirt's flags) into a new pod on node b, which has a new IP. The timeline of each migration is
printed (pytest -s shows it).

The seed's test (``same-mac``) and the MAC change (``mac-change``) run on each guest type of
lab/guests.py, against the lab's stand-in for virt-launcher's DHCP server: ``busybox`` (the fast
lane: udhcpc driven by our own script), ``debian-networkd`` (Debian 12 with systemd-networkd in
its stock behaviour) and ``debian-nm`` (Debian 12 with NetworkManager 1.42 in its stock
behaviour: its internal DHCP client, its default "Wired connection" profile). What differs by
guest is data, in ``GUESTS``:

- how the guest reports its lease: the Debian guests' observer (which only reports) says the
  address is on the NIC (``addr-add``) before its ack line, which can trail it by a second;
- whose own record shows the guest's stack took the lease in the target pod: networkd's log line,
  or NetworkManager's record of the lease (its device run state,
  /run/NetworkManager/devices/<ifindex>, or nmcli); NetworkManager's own log lines reach the
  console many seconds late (it logs a lot, TCG is slow) and a scenario tears down at the first
  ping reply, so none is asserted;
- what ``same-mac`` needs: NetworkManager does not react to a short carrier flap (it defers acting
  on a carrier loss by its carrier-wait-timeout, 6 s by default, and cancels that when the carrier
  is back), so the sidecar's default link refresh leaves it on its old lease (docs/lab.md, guest
  types); its VMI carries nic-refresh=reattach, as docs/sidecar.md tells its users, and the NIC is
  detached and attached again with the same MAC, a new device to NetworkManager, which then asks
  for a lease. A MAC change (a new NIC) needs nothing of the kind on any guest.

The other scenarios (the control, the round trip, two NICs, the lab's self-check, every policy on
both DHCP families) run on the busybox guest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from bridge_migration_contract import NicRefresh
from lab.dhcp import server_ip
from lab.guests import GuestType
from lab.scenario import MigrationOutcome, ScenarioResult, run_scenario
from tests.lab.assertions import (
    assert_migrated_the_kubevirt_way,
    assert_recovered,
    assert_recovered_from_addr_add,
    assert_sidecar_played_by_the_book,
    only_fixup,
)

pytestmark = pytest.mark.lab


@dataclass(frozen=True)
class GuestCase:
    """What one guest type does differently in same-mac and mac-change; the rest is the same."""

    guest: GuestType
    # The VMI's nic-refresh annotation in same-mac (None: unset), and the sidecar's action then.
    same_mac_nic_refresh: NicRefresh | None
    same_mac_action: Literal["link-refresh", "reattach"]
    # The guest reports the address on the NIC (addr-add) before its ack line (the Debian observer).
    addr_add_before_ack: bool
    # The network stack whose own record of the target pod's lease is checked (busybox: udhcpc runs
    # our script, which writes the ack line; nothing more to read).
    stack: Literal["udhcpc", "networkd", "networkmanager"]
    # A NIC reattached with a new MAC is a new device that the stack configures by its default
    # profile, no profile being written for it (NetworkManager's "Wired connection").
    new_device_on_mac_change: bool = False
    # The guest runs qemu-guest-agent (the Debian guests): every fixup is verified through it.
    agent: bool = False
    # The steps of the same-mac fixup, with what the agent showed after each (nic-refresh auto:
    # NetworkManager ignores the flap, and the closed loop escalates to the reattach).
    same_mac_steps: tuple[tuple[str, str], ...] = (("link-refresh", "unverified"),)


GUESTS = [
    GuestCase("busybox", None, "link-refresh", addr_add_before_ack=False, stack="udhcpc"),
    GuestCase(
        "debian-networkd",
        None,
        "link-refresh",
        addr_add_before_ack=True,
        stack="networkd",
        agent=True,
        same_mac_steps=(("link-refresh", "verified"),),
    ),
    # No annotation: NetworkManager guests recover under nic-refresh auto (issue 23).
    GuestCase(
        "debian-nm",
        None,
        "link-refresh",
        True,
        "networkmanager",
        new_device_on_mac_change=True,
        agent=True,
        same_mac_steps=(("link-refresh", "stale"), ("reattach", "verified")),
    ),
]
by_guest = pytest.mark.parametrize("case", GUESTS, ids=[case.guest for case in GUESTS])


def _run(kind: str, **kwargs: object) -> ScenarioResult:
    result = run_scenario(kind, say=print, **kwargs)  # type: ignore[arg-type]
    print(result.timelines())
    return result


def _assert_recovered(case: GuestCase, outcome: MigrationOutcome, *, guest_mac: str) -> None:
    check = assert_recovered_from_addr_add if case.addr_add_before_ack else assert_recovered
    check(outcome, guest_mac=guest_mac)


def _assert_the_stack_took_the_lease(case: GuestCase, outcome: MigrationOutcome) -> None:
    if case.stack == "udhcpc":
        return
    assert outcome.dhcp_ack is not None
    nic = outcome.dhcp_ack.nic
    assert nic is not None and nic.startswith("ens"), "not udev's predictable name: is this the Debian guest?"
    if case.stack == "networkd":
        # networkd's own line, e.g. "ens2: DHCPv4 address 10.244.2.10/24, gateway 10.244.2.1 acquired
        # from 169.254.75.10", logged after the migration started.
        wanted = f"{nic}: DHCPv4 address {outcome.target_ip}/24"
        logs = [" ".join(e.args) for e in outcome.guest_events if e.kind == "networkd" and wanted in " ".join(e.args)]
        assert logs, f"no networkd log line {wanted!r} after the migration"
        assert logs[0].endswith(f"acquired from {server_ip(0)}")
    else:
        # The ack's router and server as NetworkManager recorded the lease.
        assert outcome.dhcp_ack.fields["server"] == server_ip(0)
        source = outcome.dhcp_ack.fields["from"]
        assert source.startswith("/run/NetworkManager/devices/") or source == "nmcli", source


@by_guest
def test_same_mac_the_sidecar_refreshes_the_nic_and_the_guests_own_stack_renews_into_the_target_pod(
    case: GuestCase,
) -> None:
    result = _run("same-mac", guest=case.guest, nic_refresh=case.same_mac_nic_refresh)
    assert result.ping_before
    (outcome,) = result.migrations
    assert_migrated_the_kubevirt_way(outcome)
    _assert_recovered(case, outcome, guest_mac=result.first_mac)
    assert_sidecar_played_by_the_book(outcome)
    _assert_the_stack_took_the_lease(case, outcome)
    fixup = only_fixup(outcome, agent=case.agent)
    assert [(i["name"], i["action"], i["newMac"]) for i in fixup["interfaces"]] == [
        ("default", case.same_mac_action, result.first_mac)
    ]
    (nic,) = fixup["interfaces"]
    assert tuple((s["action"], s["outcome"]) for s in nic["steps"]) == case.same_mac_steps
    assert result.final_domain_mac == result.first_mac
    assert result.final_guest_address == f"{outcome.target_ip}/24"


@by_guest
def test_mac_change_the_sidecar_reattaches_the_nic_with_the_target_pods_mac(case: GuestCase) -> None:
    result = _run("mac-change", guest=case.guest)
    assert result.ping_before
    (outcome,) = result.migrations
    assert_migrated_the_kubevirt_way(outcome)
    assert outcome.target_cni_mac != result.first_mac
    _assert_recovered(case, outcome, guest_mac=outcome.target_cni_mac)
    assert_sidecar_played_by_the_book(outcome)
    _assert_the_stack_took_the_lease(case, outcome)
    if case.new_device_on_mac_change:
        # A new device (new ifindex, the target pod's MAC) that the stack configured with no
        # profile written for it: its default wired profile.
        assert outcome.dhcp_ack is not None
        (new_nic,) = [
            e
            for e in outcome.guest_events
            if e.kind == "nic-up" and e.nic == outcome.dhcp_ack.nic and e.fields.get("mac") == outcome.target_cni_mac
        ]
        assert new_nic.precedes(outcome.dhcp_ack)
    fixup = only_fixup(outcome, agent=case.agent)
    assert [(i["name"], i["action"], i["newMac"]) for i in fixup["interfaces"]] == [
        ("default", "reattach", outcome.target_cni_mac)
    ]
    assert result.final_domain_mac == outcome.target_cni_mac
    assert result.final_guest_address == f"{outcome.target_ip}/24"


def test_control_without_the_sidecar_the_guest_keeps_its_stale_address_and_cannot_ping() -> None:
    result = _run("control")
    assert result.ping_before
    (outcome,) = result.migrations
    assert_migrated_the_kubevirt_way(outcome)
    assert outcome.target_ip != result.first_ip
    assert outcome.dhcp_ack is None
    assert outcome.first_reply is None, "ping worked without any fixup: the lab does not reproduce the bug"
    assert outcome.fixups == []
    assert result.final_guest_address is not None
    assert result.final_guest_address.split("/")[0] == result.first_ip


def test_round_trip_a_to_b_to_a_recovers_after_each_hop_in_a_third_pod() -> None:
    result = _run("round-trip")
    assert result.ping_before
    there, back = result.migrations
    assert (there.target_node, back.target_node) == ("b", "a")
    for outcome in (there, back):
        assert_migrated_the_kubevirt_way(outcome)
        assert_recovered(outcome, guest_mac=result.first_mac)
    # Back on node a, but in a new pod with a new address from node a's subnet.
    assert back.target_ip.startswith("10.244.1.") and back.target_ip != result.first_ip
    assert result.final_guest_address == f"{back.target_ip}/24"
    assert result.final_domain_mac == result.first_mac


def test_lab_self_check_a_hand_made_link_refresh_is_enough_for_the_guest_to_recover() -> None:
    # Lab tool, not the product: shows the guest side of the lab works on its own.
    result = _run("lab-link-refresh")
    (outcome,) = result.migrations
    assert_recovered(outcome, guest_mac=result.first_mac)


def test_two_nics_the_sidecar_fixes_both_and_the_guest_pings_from_each() -> None:
    result = _run("two-nics")
    (outcome,) = result.migrations
    assert_migrated_the_kubevirt_way(outcome)
    assert set(outcome.target_ips) == {"eth0", "eth1"}
    assert outcome.target_ips["eth0"].startswith("10.244.2.") and outcome.target_ips["eth1"].startswith("10.245.2.")
    for nic, ip in outcome.target_ips.items():
        ack, reply = outcome.nic_acks[nic], outcome.nic_replies[nic]
        assert ack is not None and ack.fields["ip"] == f"{ip}/24"
        assert ack.fields["mac"] == result.first_macs[nic]
        assert reply is not None and reply.after(ack)
        assert result.final_addresses[nic] == f"{ip}/24"
    fixup = only_fixup(outcome)
    assert sorted((i["name"], i["action"]) for i in fixup["interfaces"]) == [
        ("default", "link-refresh"),
        ("secondary", "link-refresh"),
    ]
    assert result.final_domain_macs == {"default": result.first_macs["eth0"], "secondary": result.first_macs["eth1"]}


# Every policy on both DHCP families, against the lab's stand-in for virt-launcher's DHCP server
# (one MAC by KubeVirt's rule, every other MAC ignored). Under every policy the guest must end
# with a lease from the target pod's server; what the MAC becomes is KubeVirt's rule, not ours.
@pytest.mark.parametrize(
    ("policy", "kubevirt", "action"),
    [
        ("pin", "v1.8.0", "link-refresh"),  # spec MAC: served on every version
        ("pin", "v1.9.0", "link-refresh"),
        ("keep", "v1.8.0", "reattach"),  # v1.8 serves only the target pod's MAC
        ("keep", "v1.9.0", "link-refresh"),  # v1.9 serves the VMI status MAC: the guest's
        ("follow-pod", "v1.9.0", "link-refresh"),  # (follow-pod on v1.8: test_mac_change_...)
    ],
)
def test_every_policy_gets_a_lease_from_the_target_pods_kubevirt_dhcp_server(
    policy: str, kubevirt: str, action: str
) -> None:
    result = _run("same-mac", policy=policy, kubevirt_version=kubevirt)
    (outcome,) = result.migrations
    expected = result.first_mac if action == "link-refresh" else outcome.target_cni_mac
    assert outcome.target_guest_mac == expected, "the lab's DHCP server does not follow KubeVirt's rule"
    assert_recovered(outcome, guest_mac=expected)
    fixup = only_fixup(outcome)
    assert [(i["name"], i["action"], i["newMac"]) for i in fixup["interfaces"]] == [("default", action, expected)]
    assert result.final_domain_mac == expected
    assert result.final_guest_address == f"{outcome.target_ip}/24"
