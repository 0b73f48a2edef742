"""The lab's stand-in of KubeVirt's reconcile without a lab (facts R2, R3, R6, R12, R14): its
decisions as pure functions, and its queue on libvirt's in-process test driver, whose domains
take no device changes (every sync that changes something fails there, which is the requeue).

The stand-in itself, on real daemons and guests, is tests/lab/test_reconcile.py.
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import libvirt
import pytest

from lab.events import ensure_event_loop
from lab.network import NET1_PER_NODE, POD_NETWORK, SECOND_NETWORK
from lab.process import wait_for
from lab.reconcile import (
    Change,
    Reconciler,
    ReconcileTiming,
    Sync,
    desired_link_states,
    handover_kind,
    hotplug_xml,
    link_changes,
    live_interfaces,
    nics_to_hotplug,
    plan_sync,
    with_link,
    with_link_states,
)
from lab.vmi import lab_vmi


def _vmi(*, states: dict[str, str] | None = None, status: dict[str, str] | None = None) -> dict[str, object]:
    return lab_vmi(
        namespace="default",
        name="vm",
        networks=(POD_NETWORK, NET1_PER_NODE),
        annotations={},
        macs={"default": "02:00:00:00:00:01", "net1": "02:00:00:00:00:02"},
        status_macs=status,
        states=states,
    )


def _domain(*nics: tuple[str, str | None]) -> str:
    """A domain XML with these (interface name, link state) NICs."""
    ifaces = "".join(
        f"<interface type='ethernet'><mac address='02:00:00:00:00:0{i}'/><target dev='tap{i}' managed='no'/>"
        f"<model type='virtio'/>{f'<link state={chr(39)}{state}{chr(39)}/>' if state else ''}"
        f"<alias name='ua-{name}'/></interface>"
        for i, (name, state) in enumerate(nics, start=1)
    )
    return f"<domain type='qemu'><name>default_vm</name><devices>{ifaces}</devices></domain>"


def test_a_link_differs_when_exactly_one_side_has_a_state_or_the_states_differ() -> None:
    desired = {"a": None, "b": None, "c": "down", "d": "down", "e": None}
    live = {"a": "down", "b": None, "c": None, "d": "down", "e": "up"}
    # e: our "up" is not the spec's "no <link>": KubeVirt sends it without <link> (R2).
    assert link_changes(desired, live) == {"a": None, "c": "down", "e": None}


def test_an_interface_missing_from_the_live_domain_gets_no_link_change() -> None:
    assert link_changes({"gone": None, "here": None}, {"here": "down"}) == {"here": None}


def test_the_spec_wants_no_link_element_unless_the_interface_says_state_down() -> None:
    vmi = _vmi(states={"net1": "down"})
    assert desired_link_states(vmi) == {"default": None, "net1": "down"}
    absent = _vmi(states={"net1": "absent"})
    assert desired_link_states(absent) == {"default": None}


def test_a_link_held_down_by_us_is_set_back_and_a_link_the_spec_wants_down_is_left_down() -> None:
    ours = plan_sync(_vmi(status={}), _domain(("default", "down"), ("net1", None)))
    assert ours.links == {"default": None} and ours.undoes_ours
    theirs = plan_sync(_vmi(states={"default": "down"}, status={}), _domain(("default", "down"), ("net1", None)))
    assert theirs.links == {} and not theirs.undoes_ours


def test_only_a_multus_nic_missing_from_the_domain_is_hot_plugged_again() -> None:
    vmi = _vmi(status={"default": "02:00:00:00:00:01"})  # net1 is not in the domain
    statuses = {s["name"]: s for s in vmi["status"]["interfaces"]}  # type: ignore[index]
    assert statuses["net1"]["infoSource"] == "multus-status"
    assert statuses["default"]["infoSource"] == "domain"
    assert nics_to_hotplug(vmi, {"default"}) == ["net1"]
    assert nics_to_hotplug(vmi, {"default", "net1"}) == []
    # The pod network's NIC is never re-attached by KubeVirt's sync: no multus-status.
    assert nics_to_hotplug(vmi, set()) == ["net1"]
    assert nics_to_hotplug(_vmi(states={"net1": "absent"}, status={}), set()) == []
    # No status (no domain yet): nothing.
    assert nics_to_hotplug(_vmi(), set()) == []


def test_a_multus_nic_in_the_domain_is_reported_from_the_domain_and_multus() -> None:
    vmi = lab_vmi(
        namespace="default",
        name="vm",
        networks=(POD_NETWORK, SECOND_NETWORK),
        annotations={},
        status_macs={"default": "02:00:00:00:00:01", "secondary": "02:00:00:00:00:03"},
    )
    sources = {s["name"]: s["infoSource"] for s in vmi["status"]["interfaces"]}
    assert sources == {"default": "domain", "secondary": "domain, multus-status"}


def test_kubevirts_hot_plug_xml_is_a_tap_nic_with_the_virtio_model_and_no_rom() -> None:
    xml = hotplug_xml(name="net1", mac="02:AA:00:00:00:01", target="tapb6ff6e8a1c7", mtu=1500)
    iface = ET.fromstring(xml)
    assert iface.get("type") == "ethernet"
    assert xml == xml.lower()
    assert iface.find("mac").get("address") == "02:aa:00:00:00:01"  # type: ignore[union-attr]
    assert iface.find("target").attrib == {"dev": "tapb6ff6e8a1c7", "managed": "no"}  # type: ignore[union-attr]
    assert iface.find("model").get("type") == "virtio-non-transitional"  # type: ignore[union-attr]
    assert iface.find("alias").get("name") == "ua-net1"  # type: ignore[union-attr]
    assert iface.find("rom").get("enabled") == "no"  # type: ignore[union-attr]
    assert iface.find("mtu").get("size") == "1500"  # type: ignore[union-attr]
    assert iface.find("link") is None and iface.find("driver") is None
    down = ET.fromstring(hotplug_xml(name="net1", mac="02:aa:00:00:00:01", target="t", mtu=1500, link_down=True))
    assert down.find("link").get("state") == "down"  # type: ignore[union-attr]


def test_the_update_sends_the_live_interface_with_only_its_link_changed() -> None:
    iface = live_interfaces(_domain(("default", "down")))["default"]
    sent = ET.fromstring(with_link(iface, None))
    assert sent.find("link") is None
    assert sent.find("mac").get("address") == "02:00:00:00:00:01"  # type: ignore[union-attr]
    assert sent.find("alias").get("name") == "ua-default"  # type: ignore[union-attr]
    assert ET.fromstring(with_link(iface, "down")).find("link").get("state") == "down"  # type: ignore[union-attr]


def test_a_domain_defined_for_a_state_down_interface_starts_with_its_link_down() -> None:
    xml = with_link_states(_domain(("default", None), ("net1", None)), {"net1": "down"})
    assert {n: i.find("link") is not None for n, i in live_interfaces(xml).items()} == {
        "default": False,
        "net1": True,
    }


def test_the_first_sync_of_a_target_follows_the_version_of_kubevirt() -> None:
    assert handover_kind("v1.5.0") == "source"
    assert handover_kind("v1.6.6") == "event"
    assert handover_kind("v1.8.0") == handover_kind("v1.9.0") == "job-poll"
    with pytest.raises(ValueError, match="not a KubeVirt version"):
        handover_kind("latest")


def test_a_timing_knob_names_its_mode_and_a_sync_reads_as_what_it_did() -> None:
    assert ReconcileTiming().mode == "kubevirt" and ReconcileTiming().resync_s == 300
    with pytest.raises(ValueError, match="reconcile mode"):
        ReconcileTiming(mode="sometimes")  # type: ignore[arg-type]
    sync = Sync(1.0, "device-removed ua-net1", (Change("net1", "attach", None, "mac 02:aa on tapx"),))
    assert sync.describe() == "device-removed ua-net1: net1: attached mac 02:aa on tapx"
    assert Sync(2.0, "resync", ()).describe() == "resync: no change"
    assert str(Change("default", "link", "down", None)) == "default: link down -> none"


# --- the queue, on libvirt's test driver -------------------------------------------------------

TEST_URI = "test:///default"  # one in-process driver state, shared by every connection to it


@pytest.fixture
def test_domain() -> Iterator[tuple[str, object]]:
    """A running domain with one NIC, ``ua-default``, its link down, on the test driver."""
    ensure_event_loop()
    conn = libvirt.open(TEST_URI)
    name = f"default_vm{secrets.token_hex(3)}"
    xml = _domain(("default", "down")).replace("type='qemu'", "type='test'").replace("default_vm", name)
    xml = xml.replace("<devices>", "<memory>65536</memory><os><type>hvm</type></os><devices>")
    dom = conn.defineXML(xml)
    dom.create()
    try:
        yield name, dom
    finally:
        dom.destroy()
        dom.undefine()
        conn.close()


def _reconciler(name: str, *, target: bool, version: str = "v1.9.0", **timing: float) -> Reconciler:
    return Reconciler(
        pod="pod",
        uri=TEST_URI,
        netns="unused",
        domain=name,
        # The pod network only: a Multus NIC missing from the domain would be read in a pod.
        vmi=lambda xml: lab_vmi(
            namespace="default", name="vm", networks=(POD_NETWORK,), annotations={}, status_macs={}
        ),
        timing=ReconcileTiming(**timing),  # type: ignore[arg-type]
        kubevirt_version=version,
        migration_target=target,
    )


def test_a_failed_sync_is_queued_again_each_time_it_fails(test_domain: tuple[str, object]) -> None:
    name, _ = test_domain
    rec = _reconciler(name, target=False)
    try:
        wait_for(lambda: len(rec.syncs) >= 4, timeout=30, what="four syncs")
    finally:
        rec.stop()
    first, *retries = rec.syncs[:4]
    assert first.reason == "domain running"
    # The link is down, the spec wants none: the update is tried and fails on the test driver.
    assert all(s.changes == () and s.error and "virDomainUpdateDeviceFlags" in s.error for s in rec.syncs[:4])
    assert [s.reason for s in retries] == [f"requeued after error {n}" for n in (1, 2, 3)]


def test_a_targets_events_before_its_first_sync_are_not_synced(test_domain: tuple[str, object]) -> None:
    name, dom = test_domain
    # v1.5: the first sync follows the source's hand-over, which the lab reports.
    rec = _reconciler(name, target=True, version="v1.5.0", ack_delay_s=0.05)
    try:
        dom.suspend()  # type: ignore[attr-defined]
        dom.resume()  # type: ignore[attr-defined]
        wait_for(lambda: len(rec.ignored) >= 2, timeout=30, what="two lifecycle events")
        assert rec.syncs == []
        rec.source_stopped(0.0)  # long ago: the first sync is due at once
        first = wait_for(lambda: rec.syncs[:1], timeout=30, what="the first sync")[0]
        assert first.reason.startswith("migration ended on the target")
        assert rec.ended_at == 0.0
        assert [r for _, r in rec.ignored] == ["lifecycle SUSPENDED/0", "lifecycle RESUMED/0"]
    finally:
        rec.stop()
    assert rec.syncs[0] == first
