"""The seed's functional test, automated: ping, live-migrate, ping again.

Each test runs one scenario in a fresh two-node lab: a server guest and a client guest
that pings it, both in virt-launcher-shaped pods on node a; the client live-migrates
(peer-to-peer, KubeVirt's flags) into a new pod on node b, which has a new IP. The
timeline of each migration is printed (pytest -s shows it).
"""

from __future__ import annotations

import pytest

from lab.dhcp import server_ip
from lab.scenario import MigrationOutcome, ScenarioResult, run_scenario

pytestmark = pytest.mark.lab


def _run(kind: str) -> ScenarioResult:
    result = run_scenario(kind, say=print)  # type: ignore[arg-type]
    print(result.timelines())
    return result


def _events_in_order(outcome: MigrationOutcome) -> list[str]:
    return [str(e) for e in outcome.record.target_events if e.detail == "MIGRATED"]


def _assert_migrated_the_kubevirt_way(outcome: MigrationOutcome) -> None:
    # The target announces the incoming domain (still paused), then resumes it.
    assert _events_in_order(outcome)[:2] == ["STARTED/MIGRATED", "RESUMED/MIGRATED"]


def _assert_sidecar_played_by_the_book(outcome: MigrationOutcome) -> None:
    # The lab plays virt-launcher: Info + OnDefineDomain before the domain, Shutdown at the end.
    assert outcome.sidecar_status is not None
    assert outcome.sidecar_status["hookRegistered"] is True
    assert outcome.sidecar_status["vmiKnown"] is True
    assert outcome.source_sidecar_exit == 0, "the source pod's sidecar did not exit 0 on Shutdown"


def _assert_recovered(outcome: MigrationOutcome, *, guest_mac: str) -> None:
    assert outcome.dhcp_ack is not None, "the guest never renewed its lease in the target pod"
    assert outcome.dhcp_ack.fields["ip"].split("/")[0] == outcome.target_ip
    assert outcome.dhcp_ack.fields["mac"] == guest_mac
    # From the target pod's server, which names itself as virt-launcher's does (facts D4).
    assert outcome.dhcp_ack.fields["server"] == server_ip(0)
    assert outcome.first_reply is not None, "no ping reply after the migration"
    assert outcome.first_reply.after(outcome.dhcp_ack)


def test_control_without_the_sidecar_the_guest_keeps_its_stale_address_and_cannot_ping() -> None:
    result = _run("control")
    assert result.ping_before
    (outcome,) = result.migrations
    _assert_migrated_the_kubevirt_way(outcome)
    assert outcome.target_ip != result.first_ip
    assert outcome.dhcp_ack is None
    assert outcome.first_reply is None, "ping worked without any fixup: the lab does not reproduce the bug"
    assert outcome.fixups == []
    assert result.final_guest_address is not None
    assert result.final_guest_address.split("/")[0] == result.first_ip


def test_same_mac_the_sidecar_refreshes_the_link_and_the_guest_renews_into_the_target_pod() -> None:
    result = _run("same-mac")
    assert result.ping_before
    (outcome,) = result.migrations
    _assert_migrated_the_kubevirt_way(outcome)
    _assert_recovered(outcome, guest_mac=result.first_mac)
    _assert_sidecar_played_by_the_book(outcome)
    (fixup,) = [f for f in outcome.fixups if not f.get("dryRun")]
    assert fixup["result"] == "success"
    assert [(i["name"], i["action"]) for i in fixup["interfaces"]] == [("default", "link-refresh")]
    assert result.final_domain_mac == result.first_mac
    assert result.final_guest_address == f"{outcome.target_ip}/24"


def test_mac_change_the_sidecar_reattaches_the_nic_with_the_target_pods_mac() -> None:
    result = _run("mac-change")
    assert result.ping_before
    (outcome,) = result.migrations
    _assert_migrated_the_kubevirt_way(outcome)
    assert outcome.target_cni_mac != result.first_mac
    _assert_recovered(outcome, guest_mac=outcome.target_cni_mac)
    _assert_sidecar_played_by_the_book(outcome)
    (fixup,) = [f for f in outcome.fixups if not f.get("dryRun")]
    assert fixup["result"] == "success"
    assert [(i["name"], i["action"], i["newMac"]) for i in fixup["interfaces"]] == [
        ("default", "reattach", outcome.target_cni_mac)
    ]
    assert result.final_domain_mac == outcome.target_cni_mac
    assert result.final_guest_address == f"{outcome.target_ip}/24"


def test_round_trip_a_to_b_to_a_recovers_after_each_hop_in_a_third_pod() -> None:
    result = _run("round-trip")
    assert result.ping_before
    there, back = result.migrations
    assert (there.target_node, back.target_node) == ("b", "a")
    for outcome in (there, back):
        _assert_migrated_the_kubevirt_way(outcome)
        _assert_recovered(outcome, guest_mac=result.first_mac)
    # Back on node a, but in a new pod with a new address from node a's subnet.
    assert back.target_ip.startswith("10.244.1.") and back.target_ip != result.first_ip
    assert result.final_guest_address == f"{back.target_ip}/24"
    assert result.final_domain_mac == result.first_mac


def test_lab_self_check_a_hand_made_link_refresh_is_enough_for_the_guest_to_recover() -> None:
    # Lab tool, not the product: shows the guest side of the lab works on its own.
    result = _run("lab-link-refresh")
    (outcome,) = result.migrations
    _assert_recovered(outcome, guest_mac=result.first_mac)


def test_two_nics_the_sidecar_fixes_both_and_the_guest_pings_from_each() -> None:
    result = _run("two-nics")
    (outcome,) = result.migrations
    _assert_migrated_the_kubevirt_way(outcome)
    assert set(outcome.target_ips) == {"eth0", "eth1"}
    assert outcome.target_ips["eth0"].startswith("10.244.2.") and outcome.target_ips["eth1"].startswith("10.245.2.")
    for nic, ip in outcome.target_ips.items():
        ack, reply = outcome.nic_acks[nic], outcome.nic_replies[nic]
        assert ack is not None and ack.fields["ip"] == f"{ip}/24"
        assert ack.fields["mac"] == result.first_macs[nic]
        assert reply is not None and reply.after(ack)
        assert result.final_addresses[nic] == f"{ip}/24"
    (fixup,) = [f for f in outcome.fixups if not f.get("dryRun")]
    assert fixup["result"] == "success"
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
    result = run_scenario("same-mac", say=print, policy=policy, kubevirt_version=kubevirt)  # type: ignore[arg-type]
    print(result.timelines())
    (outcome,) = result.migrations
    expected = result.first_mac if action == "link-refresh" else outcome.target_cni_mac
    assert outcome.target_guest_mac == expected, "the lab's DHCP server does not follow KubeVirt's rule"
    _assert_recovered(outcome, guest_mac=expected)
    (fixup,) = [f for f in outcome.fixups if not f.get("dryRun")]
    assert fixup["result"] == "success"
    assert [(i["name"], i["action"], i["newMac"]) for i in fixup["interfaces"]] == [("default", action, expected)]
    assert result.final_domain_mac == expected
    assert result.final_guest_address == f"{outcome.target_ip}/24"
