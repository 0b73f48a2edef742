"""The lab's stand-in of KubeVirt's reconcile (lab/reconcile.py) against real daemons and guests.

What virt-handler's syncs do to a running VMI's NICs (docs/kubevirt-facts.md R1-R3): a link
whose live state is not the spec's is set back with LIVE|CONFIG, and a Multus NIC missing from
the domain is attached again with KubeVirt's own XML. Busybox guests, no sidecar: the changes
here are made by hand, as our fixer would make them. The decisions alone are
tests/lab/test_reconcile_pure.py.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import libvirt
import pytest

from bridge_migration_contract import domain_alias
from lab.cluster import Lab, Vm, pinned_mac
from lab.process import wait_for
from lab.reconcile import Change, Reconciler, ReconcileTiming, Sync

pytestmark = pytest.mark.lab

BOOT_TIMEOUT = 180.0
LIVE_AND_CONFIG = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG


def _iface(vm: Vm, interface: str) -> ET.Element | None:
    for iface in ET.fromstring(vm.domain().XMLDesc(0)).iter("interface"):
        alias = iface.find("alias")
        if alias is not None and alias.get("name") == domain_alias(interface):
            return iface
    return None


def _link(vm: Vm, interface: str = "default") -> str | None:
    iface = _iface(vm, interface)
    assert iface is not None, f"{interface} is not in the domain of {vm.name}"
    link = iface.find("link")
    return None if link is None else link.get("state")


def _set_link_down_by_hand(vm: Vm, interface: str = "default") -> float:
    """What our fixer's link refresh does first (updateDeviceFlags, link down, LIVE|CONFIG)."""
    iface = _iface(vm, interface)
    assert iface is not None
    for link in iface.findall("link"):
        iface.remove(link)
    ET.SubElement(iface, "link", state="down")
    at = time.time()
    vm.domain().updateDeviceFlags(ET.tostring(iface, encoding="unicode"), LIVE_AND_CONFIG)
    return at


def _reconciler(vm: Vm) -> Reconciler:
    assert vm.pod.reconciler is not None, "the lab started no reconcile stand-in in the VM's pod"
    return vm.pod.reconciler


def _sync_that(vm: Vm, *, since: float, changed: Change, timeout: float = 60.0) -> Sync:
    def found() -> Sync | None:
        return next((s for s in _reconciler(vm).syncs if s.at >= since and changed in s.changes), None)

    return wait_for(found, timeout=timeout, what=f"a kubevirt sync of {vm.name} doing {changed}")


def test_a_link_set_down_by_hand_is_set_up_by_the_next_sync_and_a_spec_down_link_stays_down() -> None:
    # The periodic resync (300 s in virt-handler, facts R8) every second: a link change alone
    # raises no event a launcher forwards, so the resync is what finds it.
    with Lab(reconcile=ReconcileTiming(resync_s=1.0)) as lab:
        lab.add_nodes("a")
        up = lab.start_vm(name="up", node="a", sidecar=False)
        down = lab.start_vm(name="down", node="a", sidecar=False, link_down=("default",))
        up.console.wait("dhcp-ack", nic="eth0", timeout=BOOT_TIMEOUT)
        assert _link(down) == "down"  # virt-launcher defines it so (facts R2)

        at = _set_link_down_by_hand(up)
        sync = _sync_that(up, since=at, changed=Change("default", "link", "down", None))
        print(f"set back {sync.at - at:.2f} s after the link went down: {sync.describe()}")
        assert sync.error is None
        assert _link(up) is None, "the sync sends the interface without <link>"
        # libvirt raises the link on an update without <link> (the unverified part of facts R2):
        # the guest's carrier comes back.
        carrier = up.console.wait("carrier-up", nic="eth0", since=at, timeout=60)
        assert carrier.at >= at

        wait_for(lambda: len(_reconciler(down).syncs) >= 3, timeout=30, what="three syncs of the state-down VM")
        assert _link(down) == "down"
        assert [s for s in _reconciler(down).syncs if s.changes or s.error] == []
        assert _reconciler(up).syncs[0].reason == "domain running"


def test_worst_case_the_first_sync_after_a_migration_lands_right_after_a_link_goes_down() -> None:
    timing = ReconcileTiming(mode="worst", worst_window_s=600.0)
    with Lab(reconcile=timing) as lab:
        lab.add_nodes("a", "b")
        vm = lab.start_vm(name="worst", node="a", sidecar=False)
        vm.console.wait("dhcp-ack", nic="eth0", timeout=BOOT_TIMEOUT)
        record = lab.migrate(vm, to_node="b")
        target = _reconciler(vm)
        assert target.syncs == [], "worst mode: no sync before there is something to undo"
        assert target.ignored, "the target's events before its first sync are not syncs (facts R6)"

        at = _set_link_down_by_hand(vm)
        sync = _sync_that(vm, since=at, changed=Change("default", "link", "down", None))
        print(f"worst case: set back {1000 * (sync.at - at):.0f} ms after the link went down: {sync.describe()}")
        assert target.syncs[0] == sync, "the first sync of the target is the one that undid our change"
        assert sync.reason.startswith("worst case")
        assert _link(vm) is None
        assert record.resumed <= at
        # From then on the target syncs on libvirt's events (facts R8): a suspend and a resume.
        vm.domain().suspend()
        vm.domain().resume()
        wait_for(
            lambda: any("lifecycle RESUMED" in s.reason for s in target.syncs),
            timeout=30,
            what="a sync on the resume event",
        )


def test_a_multus_nic_missing_from_the_domain_is_attached_again_with_the_spec_mac_or_the_pods() -> None:
    with Lab(net1="per-node") as lab:
        lab.add_nodes("a", "b")
        pinned = lab.start_vm(name="pinned", node="a", policy="pin", sidecar=False, net1=True)
        follow = lab.start_vm(name="follow", node="a", policy="follow-pod", sidecar=False, net1=True)
        for vm in (pinned, follow):
            vm.console.wait("dhcp-ack", nic="eth1", timeout=BOOT_TIMEOUT)
        old_mac = follow.domain_mac("net1")
        lab.migrate(follow, to_node="b")
        # The target's first sync (after the migration's end) is in before the NIC goes.
        wait_for(lambda: _reconciler(follow).syncs, timeout=60, what="the target's first sync")

        detached: dict[str, float] = {}
        for vm in (pinned, follow):
            iface = _iface(vm, "net1")
            assert iface is not None
            detached[vm.name] = time.time()
            vm.domain().detachDeviceFlags(ET.tostring(iface, encoding="unicode"), LIVE_AND_CONFIG)

        expected = {
            pinned.name: pinned_mac("default", "pinned", "net1"),
            follow.name: follow.pod.net.nic("net1").cni_mac,
        }
        for vm in (pinned, follow):
            target = vm.pod.net.nic("net1").network.tap
            change = Change("net1", "attach", None, f"mac {expected[vm.name]} on {target}")
            sync = _sync_that(vm, since=detached[vm.name], changed=change)
            print(f"{vm.name}: {sync.describe()}")
            assert "device-removed" in sync.reason
            assert vm.domain_mac("net1") == expected[vm.name]
            iface = _iface(vm, "net1")
            assert iface is not None and iface.get("type") == "ethernet"
            assert iface.find("target").attrib["dev"] == target  # type: ignore[union-attr]
            assert iface.find("model").get("type") == "virtio-non-transitional"  # type: ignore[union-attr]
            assert iface.find("rom").get("enabled") == "no"  # type: ignore[union-attr]
        # Without a spec MAC: the target pod's CNI MAC, not the one the guest had (facts R3).
        assert expected[follow.name] != old_mac
