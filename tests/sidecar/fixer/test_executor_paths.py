"""The executor's paths without root: link refresh, reattach, rollback, late release, reconnect.

Against `FakeDomain` (tests/sidecar/fakes.py, a FAKE libvirt domain: libvirt's device calls need a
daemon and a QEMU guest, which the fast lane has not). The plans are the real `make_plan`'s, on
virt-launcher-shaped domain XML (tests/sidecar/samples.py); the engine, the executor, the
register of removals and the dispatcher are the product's, wired as `build_fixer` wires them.
The same paths run for real, as root, in test_lab_executor.py and test_lab_faults.py.

Each test says what a user would check: the NICs the guest has (the live domain), the NICs in the
persistent definition, what the guest noticed, and the fixup record.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from bridge_migration_contract import AnnotationKeys
from sidecar.core.models import FixupRecord, InterfaceFixup
from sidecar.core.plan import InterfacePlan, make_plan
from sidecar.core.removals import DeviceRemovals
from sidecar.fixer import executor as executor_module
from sidecar.fixer.build import Source, assemble
from sidecar.fixer.dispatch import Dispatcher
from sidecar.fixer.engine import Fixer
from sidecar.fixer.executor import Executor
from sidecar.fixer.metrics import Metrics
from sidecar.fixer.settings import FixerSettings
from tests.sidecar.fakes import CONFIG, LIVE, FakeDomain, busy_error, libvirt_error
from tests.sidecar.samples import GUEST_MAC, domain_xml, vmi

NEW_MAC = "02:5e:00:00:00:42"
ALIAS = "ua-default"
DETACH_TIMEOUT_S = 0.05  # how long the executor waits for a guest that does not release the NIC
SETTINGS = FixerSettings(link_pause_s=0, resume_settle_s=0, link_down_spacing_s=0, detach_timeout_s=DETACH_TIMEOUT_S)
VIR_ERR_INTERNAL_ERROR = 1
VIR_ERR_DEVICE_MISSING = 99


@dataclass
class Rig:
    """One VM's fixer on a fake domain, assembled as `sidecar.fixer.build.build_fixer` does it
    (which needs a libvirt URI): executor and removals, engine, dispatcher worker, late releases
    handed from the event thread to the worker."""

    dom: FakeDomain
    removals: DeviceRemovals
    executor: Executor
    fixer: Fixer
    dispatcher: Dispatcher
    annotations: dict[str, str] = field(default_factory=dict)

    def want(self, mac: str) -> None:
        """The pod's annotations: policy pin, this MAC expected (a new one means a reattach)."""
        self.annotations.update(
            {
                "bridge-migration.kubevirt.io/mac-policy": "pin",
                "bridge-migration.kubevirt.io/macs": json.dumps({"default": mac}),
            }
        )

    def fixup(self) -> FixupRecord:
        return self.fixer.run(trigger="manual", force=True)

    def drain(self) -> None:
        """Let the guest's releases, their events and the worker's queue run out."""
        self.dom.join()
        self.dispatcher.stop(timeout=10)

    def restores(self, reason: str) -> float:
        text = self.fixer.metrics.exposition().decode()
        prefix = f'bridge_migration_nic_restores_total{{reason="{reason}"}} '
        return sum(float(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix))


def make_rig(dom_factory: Any, *, settings: FixerSettings = SETTINGS) -> Rig:
    """The product's own wiring (build.assemble) over a fake domain instead of a libvirt watcher."""
    removals = DeviceRemovals()
    dom: FakeDomain = dom_factory(removals)
    annotations: dict[str, str] = {}
    engine = assemble(
        settings=settings,
        removals=removals,
        domain=lambda: dom,
        source=Source(
            vmi=lambda: vmi(annotations=annotations),
            annotations_file=None,  # the VMI's annotations stand for the pod's
            links=dict,  # policy pin: the pod-side MAC is not needed
            keys=AnnotationKeys(),
            kubevirt_family="v1.9+",
        ),
        metrics=Metrics(),
    )
    engine.dispatcher.start()
    return Rig(dom, removals, engine.executor, engine.fixer, engine.dispatcher, annotations)


@pytest.fixture
def rig() -> Iterator[Rig]:
    """A persistent domain (as after a KubeVirt migration) whose guest releases a NIC promptly."""
    the_rig = make_rig(lambda removals: FakeDomain(domain_xml(), events=removals))
    yield the_rig
    the_rig.drain()


def plan_for(dom: FakeDomain, mac: str) -> InterfacePlan:
    """The real planner's decision for the domain's one NIC when ``mac`` is expected."""
    [plan] = make_plan(domain_xml=dom.XMLDesc(0), vmi=vmi(), policy="pin", macs={"default": mac}, pod_macs={})
    return plan


def only(record: FixupRecord) -> InterfaceFixup:
    [iface] = record.interfaces
    return iface


# --- link refresh ---


def test_a_link_refresh_on_a_persistent_domain_flaps_the_link_live_and_in_the_definition(rig: Rig) -> None:
    plan = plan_for(rig.dom, GUEST_MAC)
    assert plan.action == "link-refresh"
    result = rig.executor.apply(rig.dom, plan)
    assert (result.result, result.old_mac, result.new_mac, result.error) == ("done", GUEST_MAC, GUEST_MAC, None)
    assert rig.dom.guest_saw == [f"carrier-down {ALIAS}", f"carrier-up {ALIAS}"]
    assert rig.dom.calls == [("updateDeviceFlags", LIVE | CONFIG)] * 2
    assert rig.dom.live_nics() == [(ALIAS, GUEST_MAC, "up")]
    assert rig.dom.defined_nics() == [(ALIAS, GUEST_MAC, "up")]


def test_a_link_refresh_on_a_transient_domain_touches_the_live_domain_only() -> None:
    transient = make_rig(lambda removals: FakeDomain(domain_xml(), persistent=False, events=removals))
    try:
        result = transient.executor.apply(transient.dom, plan_for(transient.dom, GUEST_MAC))
    finally:
        transient.drain()
    assert result.result == "done"
    assert transient.dom.calls == [("updateDeviceFlags", LIVE)] * 2
    assert transient.dom.guest_saw == [f"carrier-down {ALIAS}", f"carrier-up {ALIAS}"]
    assert transient.dom.live_nics() == [(ALIAS, GUEST_MAC, "up")]


def test_a_link_refresh_falls_back_to_the_live_domain_when_the_definition_holds_the_nic_elsewhere() -> None:
    # After a restore libvirt may keep the definition's copy of the NIC at another PCI address;
    # it then answers DEVICE_MISSING for LIVE|CONFIG (docs/sidecar.md).
    elsewhere = domain_xml().replace("bus='0x01'", "bus='0x02'")
    moved = make_rig(lambda removals: FakeDomain(domain_xml(), config_xml=elsewhere, events=removals))
    try:
        result = moved.executor.apply(moved.dom, plan_for(moved.dom, GUEST_MAC))
    finally:
        moved.drain()
    assert (result.result, result.error) == ("done", None)
    assert moved.dom.calls == [("updateDeviceFlags", LIVE)] * 2  # the refused LIVE|CONFIG changed nothing
    assert moved.dom.guest_saw == [f"carrier-down {ALIAS}", f"carrier-up {ALIAS}"]
    assert moved.dom.live_nics() == [(ALIAS, GUEST_MAC, "up")]
    assert moved.dom.defined_nics() == [(ALIAS, GUEST_MAC, "up")]


def test_a_link_refresh_that_libvirt_refuses_for_another_reason_fails_and_leaves_the_link_up(rig: Rig) -> None:
    rig.dom.fail_call("updateDeviceFlags", 1, libvirt_error(VIR_ERR_INTERNAL_ERROR, "internal error: boom"))
    result = rig.executor.apply(rig.dom, plan_for(rig.dom, GUEST_MAC))
    assert result.result == "failed"
    assert result.error == "libvirtError: internal error: boom"
    assert rig.dom.guest_saw == []
    assert rig.dom.live_nics() == [(ALIAS, GUEST_MAC, "up")]


def test_a_link_refresh_waits_out_a_domain_busy_with_the_migration_job(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executor_module, "JOB_RETRY_PAUSE_S", 0.0)  # 1 s in the product
    rig.dom.fail_call("updateDeviceFlags", 1, busy_error())
    rig.dom.fail_call("updateDeviceFlags", 2, busy_error())
    result = rig.executor.apply(rig.dom, plan_for(rig.dom, GUEST_MAC))
    assert (result.result, result.error) == ("done", None)
    assert rig.dom.guest_saw == [f"carrier-down {ALIAS}", f"carrier-up {ALIAS}"]


# --- reattach ---


def test_a_reattach_gives_the_guest_its_nic_with_the_new_mac_live_and_in_the_definition(rig: Rig) -> None:
    plan = plan_for(rig.dom, NEW_MAC)
    assert plan.action == "reattach"
    result = rig.executor.apply(rig.dom, plan)
    assert (result.result, result.old_mac, result.new_mac, result.error) == ("done", GUEST_MAC, NEW_MAC, None)
    assert rig.dom.guest_saw == [f"nic-gone {ALIAS} mac={GUEST_MAC}", f"nic-up {ALIAS} mac={NEW_MAC}"]
    assert rig.dom.live_nics() == [(ALIAS, NEW_MAC, "up")]
    assert rig.dom.defined_nics() == [(ALIAS, NEW_MAC, "up")]
    assert rig.fixer.watched() == []


def test_a_reattach_on_a_transient_domain_changes_the_live_domain_only() -> None:
    transient = make_rig(lambda removals: FakeDomain(domain_xml(), persistent=False, events=removals))
    try:
        result = transient.executor.apply(transient.dom, plan_for(transient.dom, NEW_MAC))
    finally:
        transient.drain()
    assert result.result == "done"
    assert transient.dom.calls == [("detachDeviceFlags", LIVE), ("attachDeviceFlags", LIVE)]
    assert transient.dom.live_nics() == [(ALIAS, NEW_MAC, "up")]


def test_when_the_attach_fails_the_original_nic_is_put_back_and_the_record_says_restored(rig: Rig) -> None:
    refusal = "internal error: unable to execute QEMU command 'netdev_add': Duplicate ID 'hostua-default'"
    rig.dom.fail_call("attachDeviceFlags", 1, libvirt_error(VIR_ERR_INTERNAL_ERROR, refusal))
    rig.want(NEW_MAC)
    record = rig.fixup()
    iface = only(record)
    assert (record.result, iface.action, iface.result, iface.new_mac) == ("failed", "reattach", "restored", GUEST_MAC)
    assert iface.error == f"libvirtError: {refusal}"
    assert record.message == f"default: libvirtError: {refusal}"
    assert rig.dom.guest_saw == [f"nic-gone {ALIAS} mac={GUEST_MAC}", f"nic-up {ALIAS} mac={GUEST_MAC}"]
    assert rig.dom.live_nics() == [(ALIAS, GUEST_MAC, "up")]
    assert rig.dom.defined_nics() == [(ALIAS, GUEST_MAC, "up")]
    assert rig.dom.calls[-1] == ("attachDeviceFlags", LIVE | CONFIG)
    assert rig.fixer.watched() == []


class RacedByKubevirt(FakeDomain):
    """KubeVirt's reconcile attaches a Multus NIC it finds missing (docs/kubevirt-facts.md R3): here
    its attach lands between the guest's release and ours, with the MAC we were about to give."""

    raced = False

    def attachDeviceFlags(self, xml: str, flags: int = 0) -> int:  # noqa: N802
        if not self.raced:
            self.raced = True
            super().attachDeviceFlags(xml, flags)  # KubeVirt's, with the same MAC
        return super().attachDeviceFlags(xml, flags)  # ours: refused, the alias is taken


def test_a_nic_kubevirt_attached_back_with_the_wanted_mac_before_us_counts_as_done() -> None:
    raced = make_rig(lambda removals: RacedByKubevirt(domain_xml(), events=removals))
    try:
        raced.want(NEW_MAC)
        iface = only(raced.fixup())
    finally:
        raced.drain()
    assert (iface.result, iface.new_mac, iface.error) == ("done", NEW_MAC, None)
    assert raced.dom.live_nics() == [(ALIAS, NEW_MAC, "up")]
    assert raced.fixer.watched() == []


def test_an_attach_refused_while_the_migration_job_holds_the_domain_is_retried(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executor_module, "JOB_RETRY_PAUSE_S", 0.0)
    rig.dom.fail_call("attachDeviceFlags", 1, busy_error())
    rig.want(NEW_MAC)
    record = rig.fixup()
    assert (record.result, only(record).result) == ("unverified", "done")
    assert rig.dom.live_nics() == [(ALIAS, NEW_MAC, "up")]
    assert rig.dom.defined_nics() == [(ALIAS, NEW_MAC, "up")]


# --- a guest that does not release the NIC, or releases it late ---


@pytest.fixture
def deaf_guest() -> Iterator[Rig]:
    """A guest that does not act on the unplug request by itself (`guest_releases` lets go late)."""
    the_rig = make_rig(lambda removals: FakeDomain(domain_xml(), events=removals, release_after_s=None))
    yield the_rig
    the_rig.drain()


def test_a_guest_that_never_releases_the_nic_keeps_it_and_the_nic_is_guarded(deaf_guest: Rig) -> None:
    deaf_guest.want(NEW_MAC)
    record = deaf_guest.fixup()
    iface = only(record)
    assert (record.result, iface.result, iface.new_mac) == ("failed", "failed", GUEST_MAC)
    assert iface.error == (
        f"guest did not release {ALIAS} within {DETACH_TIMEOUT_S}s"
        " (it will be re-attached if the guest releases it later)"
    )
    assert deaf_guest.dom.guest_saw == []
    assert deaf_guest.dom.live_nics() == [(ALIAS, GUEST_MAC, "up")]
    # libvirt dropped it from the definition when it accepted the detach; it is put back there.
    assert deaf_guest.dom.defined_nics() == [(ALIAS, GUEST_MAC, "up")]
    assert [late.alias for late in deaf_guest.removals.guarded()] == [ALIAS]
    assert deaf_guest.fixer.watched() == [ALIAS]


def test_a_nic_the_guest_releases_after_the_timeout_is_attached_again_by_the_worker(deaf_guest: Rig) -> None:
    deaf_guest.want(NEW_MAC)
    assert only(deaf_guest.fixup()).result == "failed"
    deaf_guest.dom.guest_releases(ALIAS)  # DEVICE_REMOVED on another thread; the worker re-attaches
    deaf_guest.drain()
    assert deaf_guest.dom.guest_saw == [f"nic-gone {ALIAS} mac={GUEST_MAC}", f"nic-up {ALIAS} mac={GUEST_MAC}"]
    assert deaf_guest.dom.live_nics() == [(ALIAS, GUEST_MAC, "up")]
    assert deaf_guest.dom.defined_nics() == [(ALIAS, GUEST_MAC, "up")]
    # The definition had it back already: the late restore went to the live domain alone.
    assert deaf_guest.dom.calls[-1] == ("attachDeviceFlags", LIVE)
    assert deaf_guest.restores("late-release") == 1
    assert deaf_guest.fixer.watched() == []


def test_after_a_late_release_was_undone_the_next_reattach_gives_the_guest_the_new_mac(deaf_guest: Rig) -> None:
    deaf_guest.want(NEW_MAC)
    assert only(deaf_guest.fixup()).result == "failed"
    deaf_guest.dom.guest_releases(ALIAS)
    deaf_guest.drain()
    deaf_guest.dom.release_after_s = 0.01  # this time the guest honours the unplug
    record = deaf_guest.fixup()
    assert (record.result, only(record).result, only(record).new_mac) == ("unverified", "done", NEW_MAC)
    assert deaf_guest.dom.live_nics() == [(ALIAS, NEW_MAC, "up")]
    assert deaf_guest.dom.defined_nics() == [(ALIAS, NEW_MAC, "up")]
    assert deaf_guest.fixer.watched() == []


def test_a_reattach_retried_while_the_first_unplug_is_pending_still_puts_the_nic_back_when_released(
    deaf_guest: Rig,
) -> None:
    deaf_guest.want(NEW_MAC)
    assert only(deaf_guest.fixup()).result == "failed"
    retry = deaf_guest.fixup()  # the user retries the failed fixup (or the next trigger does)
    assert "is already in the process of unplug" in (only(retry).error or "")
    assert deaf_guest.dom.live_nics() == [(ALIAS, GUEST_MAC, "up")]  # nothing changed
    deaf_guest.dom.guest_releases(ALIAS)  # the first unplug request, honoured late
    deaf_guest.drain()
    assert deaf_guest.dom.live_nics() == [(ALIAS, GUEST_MAC, "up")]
    assert deaf_guest.dom.defined_nics() == [(ALIAS, GUEST_MAC, "up")]


# --- libvirt dies in the middle of a reattach ---


def test_libvirt_killed_inside_the_detach_the_nic_is_put_back_live_once_libvirt_returns(rig: Rig) -> None:
    rig.dom.die_inside_next_detach()
    rig.want(NEW_MAC)
    record = rig.fixup()
    iface = only(record)
    assert (record.result, iface.result, iface.new_mac) == ("failed", "failed", None)
    assert iface.error is not None
    assert iface.error.startswith("libvirtError: internal error: client socket is closed;")
    assert iface.error.endswith("(retried when libvirt is back)")
    assert rig.dom.guest_saw == [f"nic-gone {ALIAS} mac={GUEST_MAC}"]
    assert rig.fixer.watched() == [ALIAS]  # /v1/status restorePending
    rig.dom.restart_libvirt()
    rig.fixer.settle()
    # Gone live, still in the definition (the detach was cut short): attached live only, so
    # libvirt does not refuse a second NIC with the same alias in the definition.
    assert rig.dom.calls[-1] == ("attachDeviceFlags", LIVE)
    assert rig.dom.guest_saw[-1] == f"nic-up {ALIAS} mac={GUEST_MAC}"
    assert rig.dom.live_nics() == [(ALIAS, GUEST_MAC, "up")]
    assert rig.dom.defined_nics() == [(ALIAS, GUEST_MAC, "up")]
    assert rig.restores("after-reconnect") == 1
    assert rig.fixer.watched() == []


def test_libvirt_killed_after_the_detach_the_worker_settles_the_nic_after_the_reconnect(deaf_guest: Rig) -> None:
    dom = deaf_guest.dom
    dom.after_call("detachDeviceFlags", 1, dom.kill_libvirt)
    deaf_guest.want(NEW_MAC)
    record = deaf_guest.fixup()
    assert (record.result, only(record).result) == ("failed", "failed")
    assert "(retried when libvirt is back)" in (only(record).error or "")
    dom.guest_releases(ALIAS)  # while libvirt is away: no DEVICE_REMOVED reaches anyone
    dom.restart_libvirt()
    deaf_guest.dispatcher.settle()  # what build_fixer's on-connect hook queues after every (re)connect
    deaf_guest.drain()
    assert dom.guest_saw == [f"nic-gone {ALIAS} mac={GUEST_MAC}", f"nic-up {ALIAS} mac={GUEST_MAC}"]
    assert dom.calls[-1] == ("attachDeviceFlags", LIVE | CONFIG)
    assert dom.live_nics() == [(ALIAS, GUEST_MAC, "up")]
    assert dom.defined_nics() == [(ALIAS, GUEST_MAC, "up")]
    assert deaf_guest.restores("after-reconnect") == 1
    assert deaf_guest.fixer.watched() == []


def test_libvirt_killed_after_the_detach_a_nic_the_guest_still_holds_is_guarded_then_put_back_when_released(
    deaf_guest: Rig,
) -> None:
    dom = deaf_guest.dom
    dom.after_call("detachDeviceFlags", 1, dom.kill_libvirt)
    deaf_guest.want(NEW_MAC)
    assert only(deaf_guest.fixup()).result == "failed"
    dom.restart_libvirt()
    deaf_guest.fixer.settle()
    assert dom.live_nics() == [(ALIAS, GUEST_MAC, "up")]
    assert [late.alias for late in deaf_guest.removals.guarded()] == [ALIAS]
    dom.guest_releases(ALIAS)
    deaf_guest.drain()
    assert dom.live_nics() == [(ALIAS, GUEST_MAC, "up")]
    assert dom.defined_nics() == [(ALIAS, GUEST_MAC, "up")]
    assert deaf_guest.restores("late-release") == 1
    assert deaf_guest.fixer.watched() == []


def test_libvirt_killed_after_the_detach_a_nic_the_guest_still_holds_stays_in_the_definition(
    deaf_guest: Rig,
) -> None:
    dom = deaf_guest.dom
    dom.after_call("detachDeviceFlags", 1, dom.kill_libvirt)
    deaf_guest.want(NEW_MAC)
    assert only(deaf_guest.fixup()).result == "failed"
    dom.restart_libvirt()
    deaf_guest.fixer.settle()
    assert dom.live_nics() == [(ALIAS, GUEST_MAC, "up")]
    # What the never-released path guarantees ("put back into the persistent definition"), and
    # what test_lab_faults.py asserts after every outcome of a kill mid-reattach.
    assert dom.defined_nics() == [(ALIAS, GUEST_MAC, "up")]
