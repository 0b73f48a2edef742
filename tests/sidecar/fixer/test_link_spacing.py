"""When the executor brings links down and up again, on a fake clock.

- Two link refreshes in one fixup: the second link-down comes at least 1.5 s after the first. A
  Linux guest's kernel reports carrier-down at most once a second (linkwatch), so a second NIC's
  100 ms flap inside that second reaches networkd as no change (seen in tests/lab/test_multus_net1.py).
- After a migration, with the hold fixed, no link comes back up before 1 s after the resume: a
  guest that has just resumed reads its link status late and missed shorter flaps in the lab
  (docs/lab.md). With the adaptive hold (the default) the link comes back once the guest's vCPUs
  went idle after the link-down, never later than that second.
- During the hold another client (KubeVirt's reconcile) may raise the link: it is set down again.

The domain here is a fake that only records when each link state was asked for, and the clock is
a fake the executor's sleeps advance: the timing is the executor's own, not libvirt's or the
machine's."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest

import sidecar.fixer.executor
import sidecar.fixer.linkhold
from sidecar.core.plan import InterfacePlan, make_plan
from sidecar.core.removals import DeviceRemovals
from sidecar.fixer.executor import Executor
from sidecar.fixer.settings import FixerSettings
from tests.sidecar.samples import VLAN_IFACE, VLAN_VMI, domain_xml


class FakeClock:
    """Stands in for the executor's `time` module: sleeping advances it, nothing else does."""

    EPOCH = 1_800_000_000.0  # wall-clock seconds at monotonic 0

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.EPOCH + self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(sidecar.fixer.executor, "time", fake)
    monkeypatch.setattr(sidecar.fixer.linkhold, "time", fake)
    return fake


class FakeDomain:
    """Records (clock time, 'up'|'down') per updateDeviceFlags call and keeps each NIC's live link
    state; ``busy_until`` is when the guest's vCPU goes idle (None: libvirt cannot tell);
    ``on_read`` runs at each XMLDesc (another libvirt client acting, e.g. KubeVirt's reconcile)."""

    def __init__(self, xml: str, clock: FakeClock) -> None:
        self.xml = xml
        self.clock = clock
        self.calls: list[tuple[float, str]] = []
        self.down: set[str] = set()
        self.busy_until: float | None = None
        self.on_read: Callable[[FakeDomain], None] | None = None

    def vcpus(self) -> tuple[list[tuple[int, int, int, int]], list[tuple[bool]]]:
        if self.busy_until is None:
            raise RuntimeError("not supported")
        # Busy: the vCPU runs all the time; idle: 10 % of it.
        busy = min(self.clock.now, self.busy_until)
        idle = max(0.0, self.clock.now - self.busy_until) * 0.1
        return [(0, 1, int((busy + idle) * 1e9), 0)], [(True,)]

    def name(self) -> str:
        return "default_vmi-bridge"

    def state(self) -> list[int]:
        return [1, 1]

    def XMLDesc(self, flags: int = 0) -> str:  # noqa: N802
        if self.on_read is not None:
            self.on_read(self)
        root = ET.fromstring(self.xml)
        for iface in root.iter("interface"):
            alias = iface.find("alias")
            if alias is not None and alias.get("name") in self.down:
                ET.SubElement(iface, "link", {"state": "down"})
        return ET.tostring(root, encoding="unicode")

    def isPersistent(self) -> int:  # noqa: N802
        return 1

    def updateDeviceFlags(self, xml: str, flags: int = 0) -> int:  # noqa: N802
        state = "down" if 'state="down"' in xml else "up"
        self.calls.append((self.clock.now, state))
        alias = ET.fromstring(xml).find("alias")
        assert alias is not None
        (self.down.add if state == "down" else self.down.discard)(alias.get("name", ""))
        return 0

    def detachDeviceFlags(self, xml: str, flags: int = 0) -> int:  # noqa: N802
        raise AssertionError("a link refresh detaches nothing")

    def attachDeviceFlags(self, xml: str, flags: int = 0) -> int:  # noqa: N802
        raise AssertionError("a link refresh attaches nothing")


def _two_refreshes(clock: FakeClock) -> tuple[FakeDomain, list[InterfacePlan]]:
    # The second link refresh is a bridge on a Multus network: a macvtap NIC whose MAC stays gets
    # nothing (facts V6).
    xml = domain_xml(extra=VLAN_IFACE)
    plans = make_plan(domain_xml=xml, vmi=VLAN_VMI, policy="pin", macs={}, pod_macs={})
    assert [p.action for p in plans] == ["link-refresh", "link-refresh"]
    return FakeDomain(xml, clock), plans


def test_a_second_link_down_waits_out_the_guests_once_a_second_carrier_down_limit(clock: FakeClock) -> None:
    dom, plans = _two_refreshes(clock)
    executor = Executor(FixerSettings(link_pause_s=0.1), DeviceRemovals())
    results = [executor.apply(dom, p) for p in plans]
    assert [r.result for r in results] == ["done", "done"]
    assert dom.calls == [(0.0, "down"), (0.1, "up"), (1.5, "down"), (1.6, "up")]


def test_with_the_hold_fixed_the_first_link_stays_down_until_a_second_after_the_resume(clock: FakeClock) -> None:
    dom, plans = _two_refreshes(clock)
    dom.busy_until = 0.0  # idle at once: evidence the fixed hold does not use
    executor = Executor(FixerSettings(link_pause_s=0.1, resume_settle_s=1.0, adaptive_hold=False), DeviceRemovals())
    clock.sleep(0.2)  # the fixup starts 200 ms after the resume event
    resumed_at = clock.time() - 0.2
    results = [executor.apply(dom, p, resumed_at=resumed_at) for p in plans]
    assert [r.result for r in results] == ["done", "done"]
    # First NIC: down at once, up 1 s after the resume (at 0). Second: down 1.5 s after the first, 100 ms.
    assert [state for _, state in dom.calls] == ["down", "up", "down", "up"]
    assert [t for t, _ in dom.calls] == pytest.approx([0.2, 1.0, 1.7, 1.8])


def test_a_fixup_asked_for_by_hand_keeps_the_short_pause(clock: FakeClock) -> None:
    dom, plans = _two_refreshes(clock)
    executor = Executor(FixerSettings(link_pause_s=0.1, resume_settle_s=1.0), DeviceRemovals())
    executor.apply(dom, plans[0], resumed_at=None)
    assert dom.calls == [(0.0, "down"), (0.1, "up")]


def test_the_adaptive_hold_ends_once_the_guest_went_idle_after_the_link_down(clock: FakeClock) -> None:
    dom, plans = _two_refreshes(clock)
    dom.busy_until = 0.45  # the guest works through what the resume left it until 450 ms after
    executor = Executor(FixerSettings(link_pause_s=0.1, resume_settle_s=1.0), DeviceRemovals())
    result = executor.apply(dom, plans[0], resumed_at=clock.time())
    [(down_at, _), (up_at, _)] = dom.calls
    assert down_at == 0.0
    # Two idle polls of 20 ms after it went idle, then up: well before the settle time.
    assert 0.45 < up_at <= 0.45 + 3 * 0.02 + 1e-9
    assert [(s.hold_ended_by, s.reasserted) for s in result.steps] == [("guest-idle", 0)]


def test_the_adaptive_hold_without_evidence_lasts_until_the_settle_time(clock: FakeClock) -> None:
    dom, plans = _two_refreshes(clock)  # busy_until None: libvirt cannot give the vCPU time
    executor = Executor(FixerSettings(link_pause_s=0.1, resume_settle_s=1.0), DeviceRemovals())
    result = executor.apply(dom, plans[0], resumed_at=clock.time())
    assert [t for t, _ in dom.calls] == pytest.approx([0.0, 1.0])
    assert result.steps[0].hold_ended_by == "settle"


def test_a_link_raised_by_another_client_during_the_hold_is_set_down_again(clock: FakeClock) -> None:
    dom, plans = _two_refreshes(clock)
    alias = plans[0].alias

    def reconcile_once(d: FakeDomain) -> None:
        # KubeVirt's sync lands 40 ms after our link-down and sets the link back to the spec (up).
        if d.clock.now >= 0.04 and alias in d.down and not getattr(d, "synced", False):
            d.synced = True  # type: ignore[attr-defined]
            d.down.discard(alias)
            d.calls.append((d.clock.now, "up by reconcile"))

    dom.on_read = reconcile_once
    executor = Executor(FixerSettings(link_pause_s=0.1, resume_settle_s=1.0, adaptive_hold=False), DeviceRemovals())
    result = executor.apply(dom, plans[0], resumed_at=clock.time())
    states = [state for _, state in dom.calls]
    assert states == ["down", "up by reconcile", "down", "up"]
    assert dom.calls[-1][0] == pytest.approx(1.0)  # the hold still lasts until the settle time
    assert result.steps[0].reasserted == 1


def test_a_cut_hold_starts_over_so_the_link_stays_down_a_full_pause_after_the_reassert(clock: FakeClock) -> None:
    dom, plans = _two_refreshes(clock)
    alias = plans[0].alias

    def reconcile_late(d: FakeDomain) -> None:
        # A sync that lands at 90 ms, just before a 100 ms pause would end (a fixup by hand).
        if d.clock.now >= 0.09 and alias in d.down and not getattr(d, "synced", False):
            d.synced = True  # type: ignore[attr-defined]
            d.down.discard(alias)

    dom.on_read = reconcile_late
    executor = Executor(FixerSettings(link_pause_s=0.1), DeviceRemovals())
    executor.apply(dom, plans[0])
    [down, again, up] = dom.calls
    assert (down[1], again[1], up[1]) == ("down", "down", "up")
    assert up[0] - again[0] == pytest.approx(0.1)


def test_a_link_set_down_again_counts_for_the_spacing_of_the_next_nics_link_down(clock: FakeClock) -> None:
    dom, plans = _two_refreshes(clock)
    first = plans[0].alias

    def reconcile_late(d: FakeDomain) -> None:
        # KubeVirt's sync raises the first NIC 0.9 s into its hold (after a fixed 1 s settle).
        if d.clock.now >= 0.9 and first in d.down and not getattr(d, "synced", False):
            d.synced = True  # type: ignore[attr-defined]
            d.down.discard(first)

    dom.on_read = reconcile_late
    executor = Executor(FixerSettings(link_pause_s=0.1, resume_settle_s=1.0, adaptive_hold=False), DeviceRemovals())
    resumed_at = clock.time()
    for plan in plans:
        executor.apply(dom, plan, resumed_at=resumed_at)
    downs = [t for t, state in dom.calls if state == "down"]
    assert len(downs) == 3  # the first NIC's, set again once, the second NIC's
    # The guest reports the second link-down of the first NIC only a second after the first one
    # (at 1.0 s, its once-a-second limit); the second NIC's comes 1.5 s after that report.
    assert downs[1] < 1.0
    assert downs[2] == pytest.approx(2.5)
