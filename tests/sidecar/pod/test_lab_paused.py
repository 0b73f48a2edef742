"""A paused VM, migrated as KubeVirt migrates it (VIR_MIGRATE_PAUSED), is fixed when unpaused.

The target sees STARTED/MIGRATED and SUSPENDED/PAUSED and no RESUMED/MIGRATED at all; the guest
runs again only at `virtctl unpause` (RESUMED/UNPAUSED). Before, such a guest was never fixed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from lab.cluster import Lab
from lab.process import wait_for

pytestmark = pytest.mark.lab


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as the_lab:
        the_lab.add_nodes("a", "b")
        yield the_lab


def test_a_vm_migrated_paused_gets_its_fixup_and_lease_when_it_is_unpaused(lab: Lab) -> None:
    vm = lab.start_vm(name="sleepy", node="a", policy="pin", sidecar=True)
    vm.console.wait("dhcp-ack", nic="eth0", timeout=180)
    lab.migrate(vm, to_node="b", paused=True)
    target = vm.pod
    assert target.sidecar is not None
    assert vm.domain().state()[0] == 3  # VIR_DOMAIN_PAUSED: it arrived paused
    time.sleep(2)
    assert target.sidecar.fixups() == []  # nothing to do while the guest does not run

    unpaused = lab.unpause(vm)

    def fixed() -> dict[str, object] | None:
        records = [r for r in target.sidecar.fixups() if r["trigger"] == "unpaused-after-migration"]  # type: ignore[union-attr]
        return records[-1] if records else None

    wait_for(fixed, timeout=60, interval=0.3, what="fixup after the unpause")
    record = fixed()
    assert record is not None and record["result"] == "unverified", record
    [iface] = record["interfaces"]  # type: ignore[misc]
    assert (iface["action"], iface["result"]) == ("link-refresh", "done")  # pinned MAC: same on both pods
    # The guest renews its lease from the target pod's DHCP server and gets the target's address.
    ack = vm.console.wait("dhcp-ack", since=unpaused, nic="eth0", timeout=90)
    assert ack.fields["ip"].split("/")[0] == target.ip
