"""The seed's functional test and the MAC-change scenario with a second client family: Debian 12
with NetworkManager 1.42 in its stock behaviour (guest type debian-nm: its internal DHCP client,
its default "Wired connection" profile), against the lab's stand-in for virt-launcher's DHCP
server.

NetworkManager does not react to a short carrier flap: it defers acting on a carrier loss by its
carrier-wait-timeout (6 s by default) and cancels that when the carrier is back, so the sidecar's
default 100 ms link refresh leaves it on its old lease (docs/lab.md, guest types). The same-mac
test therefore runs the link refresh with a 10 s pause, long enough for NetworkManager to take
the device down and activate it again; the MAC-change scenario (a new NIC) needs nothing of the
kind. Each test shows that NetworkManager itself took the lease in the target pod: the ack's
router and server are read from NetworkManager's record of the lease (its device run state,
/run/NetworkManager/devices/<ifindex>, or nmcli) by the guest's observer, which only reports.
NetworkManager's own log lines reach the console many seconds late (it logs a lot, TCG is slow)
and the scenario tears down at the first ping reply, so only lines logged well before that are
asserted.
"""

from __future__ import annotations

import pytest

from lab.dhcp import server_ip
from lab.scenario import MigrationOutcome, ScenarioResult, run_scenario
from tests.lab.test_guest_networkd import _assert_recovered
from tests.lab.test_scenarios import _assert_migrated_the_kubevirt_way, _assert_sidecar_played_by_the_book

pytestmark = pytest.mark.lab

GUEST = "debian-nm"


def _run(kind: str, **kwargs: int) -> ScenarioResult:
    result = run_scenario(kind, say=print, guest=GUEST, **kwargs)  # type: ignore[arg-type]
    print(result.timelines())
    return result


def _nm_log(outcome: MigrationOutcome) -> list[str]:
    return [" ".join(e.args) for e in outcome.guest_events if e.kind == "nm"]


def _assert_networkmanager_took_the_lease(outcome: MigrationOutcome) -> None:
    assert outcome.dhcp_ack is not None
    nic = outcome.dhcp_ack.nic
    assert nic is not None and nic.startswith("ens"), "not udev's predictable name: is this the Debian guest?"
    assert outcome.dhcp_ack.fields["server"] == server_ip(0)
    source = outcome.dhcp_ack.fields["from"]
    assert source.startswith("/run/NetworkManager/devices/") or source == "nmcli", source


def test_same_mac_with_networkmanager_nic_refresh_reattach_makes_it_take_the_target_pods_lease() -> None:
    """NetworkManager ignores the default 100 ms link refresh (it waits 6 s before acting on a lost
    carrier; docs/lab.md): the VMI's nic-refresh=reattach annotation has the NIC detached and
    attached again with the same MAC, a new device to NetworkManager, which then asks for a lease."""
    result = run_scenario("same-mac", say=print, guest=GUEST, nic_refresh="reattach")
    print(result.timelines())
    assert result.ping_before
    (outcome,) = result.migrations
    _assert_migrated_the_kubevirt_way(outcome)
    _assert_recovered(outcome, guest_mac=result.first_mac)
    _assert_sidecar_played_by_the_book(outcome)
    _assert_networkmanager_took_the_lease(outcome)
    (fixup,) = [f for f in outcome.fixups if not f.get("dryRun")]
    assert fixup["result"] == "success"
    assert [(i["name"], i["action"], i["newMac"]) for i in fixup["interfaces"]] == [
        ("default", "reattach", result.first_mac)
    ]
    assert result.final_domain_mac == result.first_mac
    assert result.final_guest_address == f"{outcome.target_ip}/24"


def test_mac_change_with_networkmanager_the_reattached_nic_gets_a_new_default_profile_and_the_lease() -> None:
    result = _run("mac-change")
    assert result.ping_before
    (outcome,) = result.migrations
    _assert_migrated_the_kubevirt_way(outcome)
    assert outcome.target_cni_mac != result.first_mac
    _assert_recovered(outcome, guest_mac=outcome.target_cni_mac)
    _assert_sidecar_played_by_the_book(outcome)
    _assert_networkmanager_took_the_lease(outcome)
    # A new device (new ifindex, the target pod's MAC) that NetworkManager configured with no
    # profile written for it: its default wired profile.
    assert outcome.dhcp_ack is not None
    (new_nic,) = [
        e
        for e in outcome.guest_events
        if e.kind == "nic-up" and e.nic == outcome.dhcp_ack.nic and e.fields.get("mac") == outcome.target_cni_mac
    ]
    assert new_nic.precedes(outcome.dhcp_ack)
    (fixup,) = [f for f in outcome.fixups if not f.get("dryRun")]
    assert fixup["result"] == "success"
    assert [(i["name"], i["action"], i["newMac"]) for i in fixup["interfaces"]] == [
        ("default", "reattach", outcome.target_cni_mac)
    ]
    assert result.final_domain_mac == outcome.target_cni_mac
    assert result.final_guest_address == f"{outcome.target_ip}/24"
