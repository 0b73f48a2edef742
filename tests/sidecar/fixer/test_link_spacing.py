"""When the executor brings links down and up again, on a fake clock.

- Two link refreshes in one fixup: the second link-down comes at least 1.5 s after the first. A
  Linux guest's kernel reports carrier-down at most once a second (linkwatch), so a second NIC's
  100 ms flap inside that second reaches networkd as no change (seen in tests/lab/test_multus_net1.py).
- After a migration no link comes back up before 1 s after the resume: a guest that has just
  resumed reads its link status late and missed shorter flaps in the lab (docs/lab.md).

The domain here is a fake that only records when each link state was asked for, and the clock is
a fake the executor's sleeps advance: the timing is the executor's own, not libvirt's or the
machine's."""

from __future__ import annotations

import pytest

import sidecar.fixer.executor
from sidecar.core.plan import InterfacePlan, make_plan
from sidecar.core.removals import DeviceRemovals
from sidecar.fixer.executor import Executor
from sidecar.fixer.settings import FixerSettings
from tests.sidecar.samples import MACVTAP_IFACE, THREE_NIC_VMI, domain_xml


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
    return fake


class FakeDomain:
    """Records (clock time, 'up'|'down') per updateDeviceFlags call; nothing else."""

    def __init__(self, xml: str, clock: FakeClock) -> None:
        self.xml = xml
        self.clock = clock
        self.calls: list[tuple[float, str]] = []

    def name(self) -> str:
        return "default_vmi-bridge"

    def state(self) -> list[int]:
        return [1, 1]

    def XMLDesc(self, flags: int = 0) -> str:  # noqa: N802
        return self.xml

    def isPersistent(self) -> int:  # noqa: N802
        return 1

    def updateDeviceFlags(self, xml: str, flags: int = 0) -> int:  # noqa: N802
        self.calls.append((self.clock.now, "down" if 'state="down"' in xml else "up"))
        return 0

    def detachDeviceFlags(self, xml: str, flags: int = 0) -> int:  # noqa: N802
        raise AssertionError("a link refresh detaches nothing")

    def attachDeviceFlags(self, xml: str, flags: int = 0) -> int:  # noqa: N802
        raise AssertionError("a link refresh attaches nothing")


def _two_refreshes(clock: FakeClock) -> tuple[FakeDomain, list[InterfacePlan]]:
    xml = domain_xml(extra=MACVTAP_IFACE)
    plans = make_plan(domain_xml=xml, vmi=THREE_NIC_VMI, policy="pin", macs={}, pod_macs={})
    assert [p.action for p in plans] == ["link-refresh", "link-refresh"]
    return FakeDomain(xml, clock), plans


def test_a_second_link_down_waits_out_the_guests_once_a_second_carrier_down_limit(clock: FakeClock) -> None:
    dom, plans = _two_refreshes(clock)
    executor = Executor(FixerSettings(link_pause_s=0.1), DeviceRemovals())
    results = [executor.apply(dom, p) for p in plans]
    assert [r.result for r in results] == ["done", "done"]
    assert dom.calls == [(0.0, "down"), (0.1, "up"), (1.5, "down"), (1.6, "up")]


def test_after_a_migration_the_first_link_stays_down_until_a_second_after_the_resume(clock: FakeClock) -> None:
    dom, plans = _two_refreshes(clock)
    executor = Executor(FixerSettings(link_pause_s=0.1, resume_settle_s=1.0), DeviceRemovals())
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
