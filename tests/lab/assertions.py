"""Checks the lab's scenario tests share (test_scenarios, test_multus_net1): what a user would
check after a live migration, read from lab.scenario's result."""

from __future__ import annotations

from typing import Any

from lab.dhcp import server_ip
from lab.scenario import MigrationOutcome


def target_events_in_order(outcome: MigrationOutcome) -> list[str]:
    return [str(e) for e in outcome.record.target_events if e.detail == "MIGRATED"]


def assert_migrated_the_kubevirt_way(outcome: MigrationOutcome) -> None:
    # The target announces the incoming domain (still paused), then resumes it.
    assert target_events_in_order(outcome)[:2] == ["STARTED/MIGRATED", "RESUMED/MIGRATED"]


def assert_sidecar_played_by_the_book(outcome: MigrationOutcome) -> None:
    # The lab plays virt-launcher: Info + OnDefineDomain before the domain, Shutdown at the end.
    assert outcome.sidecar_status is not None
    assert outcome.sidecar_status["hookRegistered"] is True
    assert outcome.sidecar_status["vmiKnown"] is True
    assert outcome.source_sidecar_exit == 0, "the source pod's sidecar did not exit 0 on Shutdown"


def assert_recovered(outcome: MigrationOutcome, *, guest_mac: str) -> None:
    """The guest renewed into the target pod's address with ``guest_mac``, then pinged."""
    assert outcome.dhcp_ack is not None, "the guest never renewed its lease in the target pod"
    assert outcome.dhcp_ack.fields["ip"].split("/")[0] == outcome.target_ip
    assert outcome.dhcp_ack.fields["mac"] == guest_mac
    # From the target pod's server, which names itself as virt-launcher's does (facts D4).
    assert outcome.dhcp_ack.fields["server"] == server_ip(0)
    assert outcome.first_reply is not None, "no ping reply after the migration"
    assert outcome.first_reply.after(outcome.dhcp_ack)


def assert_recovered_from_addr_add(outcome: MigrationOutcome, *, guest_mac: str) -> None:
    """As :func:`assert_recovered`, for a guest whose observer reports the address on the NIC
    (``addr-add``) before its ack line, which can trail it (the Debian guests): the ack names the
    target pod's router too, and the first reply must follow the moment the address was there."""
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


def only_fixup(outcome: MigrationOutcome, *, agent: bool = False) -> dict[str, Any]:
    """The one fixup the target sidecar made (dry runs aside): verified through the guest agent
    (``agent``: the Debian guests run qemu-guest-agent), unverified without one (busybox)."""
    (fixup,) = [f for f in outcome.fixups if not f.get("dryRun")]
    assert fixup["result"] == ("verified" if agent else "unverified"), fixup
    for nic in fixup["interfaces"]:
        assert nic["outcome"] == ("verified" if agent else "unverified"), nic
        if agent:
            assert nic["verifiedMs"] > 0 and nic["address"] is not None, nic
        else:
            assert "guest agent is not connected" in nic["outcomeReason"], nic
    return fixup
