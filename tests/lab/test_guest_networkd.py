"""The seed's functional test and the MAC-change scenario with a real distribution's network
stack: Debian 12 with systemd-networkd in its stock behaviour (guest type debian-networkd),
against the lab's stand-in for virt-launcher's DHCP server.

Besides what the busybox scenarios check, each test shows that networkd itself took the lease
in the target pod (its own log line, forwarded to the console by the guest's observer, which
only reports), and what the target pod's DHCP server saw from it.
"""

from __future__ import annotations

import pytest

from lab.dhcp import server_ip
from lab.scenario import MigrationOutcome, ScenarioResult, run_scenario
from tests.lab.test_scenarios import _assert_migrated_the_kubevirt_way, _assert_sidecar_played_by_the_book

pytestmark = pytest.mark.lab

GUEST = "debian-networkd"


def _run(kind: str) -> ScenarioResult:
    result = run_scenario(kind, say=print, guest=GUEST)  # type: ignore[arg-type]
    print(result.timelines())
    return result


def _assert_recovered(outcome: MigrationOutcome, *, guest_mac: str) -> None:
    """As the busybox scenarios' check, except that the first reply must follow the moment the
    address was on the NIC (the observer's addr-add), which its dhcp-ack line can trail."""
    ack = outcome.dhcp_ack
    assert ack is not None, "the guest never renewed its lease in the target pod"
    assert ack.fields["ip"] == f"{outcome.target_ip}/24"
    assert ack.fields["mac"] == guest_mac
    assert ack.fields["server"] == server_ip(0)
    assert ack.fields["router"] == outcome.target_ip.rsplit(".", 1)[0] + ".1"
    added = [e for e in outcome.guest_events if e.kind == "addr-add" and e.fields.get("ip") == ack.fields["ip"]]
    assert added and added[0].precedes(ack), "no addr-add line before the ack"
    assert outcome.first_reply is not None, "no ping reply after the migration"
    assert outcome.first_reply.after(added[-1])


def _assert_networkd_took_the_lease(outcome: MigrationOutcome) -> None:
    assert outcome.dhcp_ack is not None
    nic = outcome.dhcp_ack.nic
    assert nic is not None and nic.startswith("ens"), "not udev's predictable name: is this the Debian guest?"
    # networkd's own line, e.g. "ens2: DHCPv4 address 10.244.2.10/24, gateway 10.244.2.1 acquired
    # from 169.254.75.10", logged after the migration started.
    wanted = f"{nic}: DHCPv4 address {outcome.target_ip}/24"
    logs = [" ".join(e.args) for e in outcome.guest_events if e.kind == "networkd" and wanted in " ".join(e.args)]
    assert logs, f"no networkd log line {wanted!r} after the migration"
    assert logs[0].endswith(f"acquired from {server_ip(0)}")


def test_same_mac_with_systemd_networkd_the_link_refresh_makes_networkd_take_the_target_pods_lease() -> None:
    result = _run("same-mac")
    assert result.ping_before
    (outcome,) = result.migrations
    _assert_migrated_the_kubevirt_way(outcome)
    _assert_recovered(outcome, guest_mac=result.first_mac)
    _assert_sidecar_played_by_the_book(outcome)
    _assert_networkd_took_the_lease(outcome)
    (fixup,) = [f for f in outcome.fixups if not f.get("dryRun")]
    assert fixup["result"] == "success"
    assert [(i["name"], i["action"]) for i in fixup["interfaces"]] == [("default", "link-refresh")]
    assert result.final_domain_mac == result.first_mac
    assert result.final_guest_address == f"{outcome.target_ip}/24"


def test_mac_change_with_systemd_networkd_the_reattached_nic_gets_the_target_pods_lease() -> None:
    result = _run("mac-change")
    assert result.ping_before
    (outcome,) = result.migrations
    _assert_migrated_the_kubevirt_way(outcome)
    assert outcome.target_cni_mac != result.first_mac
    _assert_recovered(outcome, guest_mac=outcome.target_cni_mac)
    _assert_sidecar_played_by_the_book(outcome)
    _assert_networkd_took_the_lease(outcome)
    (fixup,) = [f for f in outcome.fixups if not f.get("dryRun")]
    assert fixup["result"] == "success"
    assert [(i["name"], i["action"], i["newMac"]) for i in fixup["interfaces"]] == [
        ("default", "reattach", outcome.target_cni_mac)
    ]
    assert result.final_domain_mac == outcome.target_cni_mac
    assert result.final_guest_address == f"{outcome.target_ip}/24"
