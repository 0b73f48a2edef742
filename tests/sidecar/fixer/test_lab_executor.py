"""The executor against a real libvirtd and a real QEMU (TCG) guest in a lab pod.

The guest's serial console shows what the guest itself saw (carrier up, a NIC appearing
with a MAC), so these tests check the effect inside the guest, not just libvirt's answer.
"""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lab.cluster import NIC_NAME, Lab, Vm
from lab.events import ensure_event_loop
from lab.sidecar import downward_api_file
from sidecar.core.errors import NoDomainError
from sidecar.core.models import FixupRecord
from sidecar.core.removals import DeviceRemovals
from sidecar.fixer.engine import Fixer
from sidecar.fixer.executor import Executor
from sidecar.fixer.metrics import Metrics
from sidecar.fixer.settings import FixerSettings
from sidecar.fixer.watcher import LibvirtWatcher, adopt_running_event_loop
from tests.sidecar.guest import wait_guest_nic
from tests.sidecar.samples import vmi

pytestmark = pytest.mark.lab

NEW_MAC = "02:5e:00:00:00:42"


@dataclass
class Rig:
    lab: Lab
    vm: Vm
    watcher: LibvirtWatcher
    fixer: Fixer
    annotations: Path
    original_mac: str
    domain_override: Any = None

    def want(self, mac: str) -> None:
        """Write the pod's annotations: policy pin with this expected MAC."""
        self.annotations.write_text(
            downward_api_file(
                {
                    "bridge-migration.kubevirt.io/mac-policy": "pin",
                    "bridge-migration.kubevirt.io/macs": f'{{"{NIC_NAME}":"{mac}"}}',
                }
            )
        )

    def iface(self, flags: int = 0) -> ET.Element:
        root = ET.fromstring(self.vm.domain().XMLDesc(flags))
        for elem in root.iter("interface"):
            alias = elem.find("alias")
            if alias is not None and alias.get("name") == f"ua-{NIC_NAME}":
                return elem
            if flags and elem.find("mac") is not None:  # the inactive XML may carry no alias
                return elem
        raise AssertionError("ua-default is missing from the domain")


def mac_of(elem: ET.Element) -> str:
    mac = elem.find("mac")
    assert mac is not None
    return str(mac.get("address"))


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("executor")
    with Lab() as lab:
        lab.add_nodes("a")
        vm = lab.start_vm(name="exec", node="a", policy="pin", sidecar=False)
        # Settled: the guest's carrier watcher takes its baseline before DHCP, so a flap
        # before the first lease could go unnoticed by it.
        vm.console.wait("dhcp-ack", nic="eth0", timeout=180)
        ensure_event_loop()
        adopt_running_event_loop()  # the lab already runs libvirt's event loop in this process
        removals = DeviceRemovals()
        watcher = LibvirtWatcher(
            uri=vm.pod.daemon.uri, domain_name=vm.domain_name, on_lifecycle=lambda ev: None, removals=removals
        )
        watcher.start()
        assert watcher.connected_once.wait(60)
        holder: dict[str, Rig] = {}

        def domain() -> Any:
            override = holder["rig"].domain_override
            return override(watcher.domain()) if override else watcher.domain()

        annotations = tmp / "annotations"
        fixer = Fixer(
            executor=Executor(FixerSettings(link_pause_s=0.1, detach_timeout_s=60), removals),
            domain=domain,
            vmi=vmi,
            annotations_file=annotations,
            links=dict,  # policy pin: the pod-side MAC is not needed
            metrics=Metrics(),
        )
        # Late releases are re-attached on a thread of their own (the callback is libvirt's).
        removals.on_late = lambda late: threading.Thread(target=fixer.restore_late, args=(late,)).start()
        original = vm.domain_mac()
        assert original is not None
        holder["rig"] = Rig(lab, vm, watcher, fixer, annotations, original)
        yield holder["rig"]
        watcher.stop()


def only_interface(record: FixupRecord) -> Any:
    assert len(record.interfaces) == 1, record
    return record.interfaces[0]


def test_the_domain_is_persistent_so_changes_go_live_and_to_config(rig: Rig) -> None:
    assert rig.vm.domain().isPersistent() == 1


def test_a_link_refresh_flaps_the_carrier_the_guest_sees(rig: Rig) -> None:
    rig.want(rig.original_mac)
    since = time.time()
    record = rig.fixer.run(trigger="manual", force=True)
    assert record.result == "unverified", record
    iface = only_interface(record)
    assert (iface.action, iface.result, iface.old_mac, iface.new_mac) == (
        "link-refresh",
        "done",
        rig.original_mac,
        rig.original_mac,
    )
    rig.vm.console.wait("carrier-up", since=since, nic="eth0", timeout=60)
    assert rig.iface().find("link") is None or rig.iface().find("link").get("state") == "up"  # type: ignore[union-attr]
    inactive = rig.iface(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert inactive.find("link") is None or inactive.find("link").get("state") != "down"  # type: ignore[union-attr]


def test_a_new_mac_means_detach_and_attach_and_the_guest_sees_the_new_nic(rig: Rig) -> None:
    rig.want(NEW_MAC)
    since = time.time()
    record = rig.fixer.run(trigger="manual", force=True)
    assert record.result == "unverified", record
    iface = only_interface(record)
    assert (iface.action, iface.result, iface.old_mac, iface.new_mac) == (
        "reattach",
        "done",
        rig.original_mac,
        NEW_MAC,
    )
    assert mac_of(rig.iface()) == NEW_MAC
    assert mac_of(rig.iface(libvirt.VIR_DOMAIN_XML_INACTIVE)) == NEW_MAC  # CONFIG too: persistent domain
    wait_guest_nic(rig.vm, mac=NEW_MAC, since=since)
    # And back, so the other tests start from the original MAC.
    rig.want(rig.original_mac)
    back = rig.fixer.run(trigger="manual", force=True)
    assert back.result == "unverified", back
    assert mac_of(rig.iface()) == rig.original_mac


class AttachFailsOnce:
    """FAKE (named as such): the real domain, except that the first attach raises.

    "attach fails after a successful detach" cannot be produced on demand with a real
    libvirt, so only that one call is faked; the detach and the restoring attach are real.
    """

    def __init__(self, dom: Any, state: dict[str, bool]) -> None:
        self._dom = dom
        self._state = state

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dom, name)

    def attachDeviceFlags(self, xml: str, flags: int = 0) -> int:  # noqa: N802 - libvirt's name
        if not self._state["failed"]:
            self._state["failed"] = True
            raise RuntimeError("fake: attach refused once")
        return int(self._dom.attachDeviceFlags(xml, flags))


def test_when_attach_fails_after_the_detach_the_original_nic_is_put_back(rig: Rig) -> None:
    state = {"failed": False}
    rig.domain_override = lambda dom: AttachFailsOnce(dom, state)
    rig.want(NEW_MAC)
    since = time.time()
    try:
        record = rig.fixer.run(trigger="manual", force=True)
    finally:
        rig.domain_override = None
    assert state["failed"]
    assert record.result == "failed"
    iface = only_interface(record)
    assert iface.result == "restored"
    assert "fake: attach refused once" in (iface.error or "")
    assert mac_of(rig.iface()) == rig.original_mac
    wait_guest_nic(rig.vm, mac=rig.original_mac, since=since)


class GuestSlowToRelease:
    """FAKE (named as such): the real domain, except that the first detach request is held
    back, standing for a guest that does not honour the unplug within the timeout. The test
    sends the real detach itself afterwards: the guest's late release."""

    def __init__(self, dom: Any, held: list[tuple[str, int]]) -> None:
        self._dom = dom
        self._held = held

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dom, name)

    def detachDeviceFlags(self, xml: str, flags: int = 0) -> int:  # noqa: N802 - libvirt's name
        if not self._held:
            self._held.append((xml, flags))
            return 0
        return int(self._dom.detachDeviceFlags(xml, flags))


def test_a_nic_released_after_the_timeout_is_attached_again(rig: Rig) -> None:
    held: list[tuple[str, int]] = []
    rig.domain_override = lambda dom: GuestSlowToRelease(dom, held)
    rig.want(NEW_MAC)
    executor = rig.fixer._executor
    saved = executor.settings
    executor.settings = FixerSettings(link_pause_s=0.1, detach_timeout_s=1.0)
    try:
        record = rig.fixer.run(trigger="manual", force=True)
    finally:
        rig.domain_override = None
        executor.settings = saved
    iface = only_interface(record)
    assert (record.result, iface.result) == ("failed", "failed")
    assert "did not release" in (iface.error or "")
    assert mac_of(rig.iface()) == rig.original_mac  # nothing changed yet
    since = time.time()
    [(xml, flags)] = held
    rig.vm.domain().detachDeviceFlags(xml, flags)  # the guest lets go, late
    wait_guest_nic(rig.vm, mac=rig.original_mac, since=since)
    assert mac_of(rig.iface()) == rig.original_mac  # the original NIC is back in the domain


def test_two_triggers_at_once_do_one_fixup_and_a_repeat_is_a_noop_unless_forced(rig: Rig) -> None:
    rig.want(rig.original_mac)
    rig.fixer.incoming_migration()  # a fresh arrival: nothing fixed yet
    results: list[FixupRecord] = []
    barrier = threading.Barrier(2)

    def trigger() -> None:
        barrier.wait()
        results.append(rig.fixer.run(trigger="manual"))

    threads = [threading.Thread(target=trigger) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(r.result for r in results) == ["noop", "unverified"]
    assert rig.fixer.run(trigger="manual").result == "noop"
    assert rig.fixer.run(trigger="manual", force=True).result == "unverified"
    history = rig.fixer.history()
    # The lock makes the loser wait for the winner, so the winner's record comes first.
    assert [r.result for r in history[-4:]] == ["unverified", "noop", "noop", "unverified"]
    for record in history:
        assert record.started >= record.trigger_time - 1
        assert record.finished is not None and record.finished >= record.started
        assert record.trigger_time_iso.endswith("Z")


def test_a_fixup_while_the_domain_is_paused_is_refused_with_a_clear_message(rig: Rig) -> None:
    dom = rig.vm.domain()
    dom.suspend()
    try:
        with pytest.raises(NoDomainError, match="is paused, not running"):
            rig.fixer.run(trigger="manual", force=True)
        assert rig.fixer.run(trigger="manual", dry_run=True).result == "dry-run"  # a dry run still plans
    finally:
        dom.resume()


def test_metrics_count_what_the_fixups_did(rig: Rig) -> None:
    # Read back through prometheus_client's own parser: what a Prometheus server would scrape.
    families = list(text_string_to_metric_families(rig.fixer.metrics.exposition().decode()))

    def sample(name: str, **labels: str) -> float:
        values = [s.value for f in families for s in f.samples if s.name == name and s.labels == labels]
        return values[0] if values else 0.0

    assert sample("bridge_migration_interface_fixups_total", action="reattach", result="done") >= 2
    assert sample("bridge_migration_interface_fixups_total", action="reattach", result="restored") == 1
    assert sample("bridge_migration_interface_fixups_total", action="link-refresh", result="done") >= 1
    assert sample("bridge_migration_fixup_runs_total", trigger="manual", result="noop") >= 2
    assert sample("bridge_migration_fixup_duration_seconds_count") >= 4


class BusyWithMigrationJob:
    """FAKE (named as such): the real domain, except that its first two device updates raise
    the error libvirt gives while another job (here: an incoming migration's) holds the domain.
    The lab's fixups at RESUMED/MIGRATED never hit the lock (their calls took ~8 ms), so the
    refusal is replayed with libvirt's own error class and code; the retried calls are real."""

    def __init__(self, dom: Any, state: dict[str, int]) -> None:
        self._dom = dom
        self._state = state

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dom, name)

    def updateDeviceFlags(self, xml: str, flags: int = 0) -> int:  # noqa: N802 - libvirt's name
        if self._state["refused"] < 2:
            self._state["refused"] += 1
            err = libvirt.libvirtError(
                "Timed out during operation: cannot acquire state change lock"
                " (held by monitor=remoteDispatchDomainMigrateFinish3Params)"
            )
            err.err = (libvirt.VIR_ERR_OPERATION_TIMEOUT, 0, str(err), 2, "", None, None, 0, 0)
            raise err
        return int(self._dom.updateDeviceFlags(xml, flags))


def test_a_link_refresh_waits_out_a_domain_busy_with_another_job(rig: Rig) -> None:
    state = {"refused": 0}
    rig.domain_override = lambda dom: BusyWithMigrationJob(dom, state)
    rig.want(rig.original_mac)
    since = time.time()
    try:
        record = rig.fixer.run(trigger="manual", force=True)
    finally:
        rig.domain_override = None
    assert state["refused"] == 2
    assert record.result == "unverified", record
    iface = only_interface(record)
    assert (iface.action, iface.result) == ("link-refresh", "done")
    # The link really went down and up after the retries: the guest saw its carrier come back.
    rig.vm.console.wait("carrier-up", since=since, nic="eth0", timeout=60)
