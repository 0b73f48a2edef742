"""Two link refreshes in one fixup: the second link-down comes at least 1.5 s after the first.

A Linux guest's kernel reports carrier-down at most once a second (linkwatch), so a second NIC's
100 ms flap inside that second reaches networkd as no change (seen in tests/lab/test_multus_net1.py).
The domain here is a fake that only records when each link state was asked for: the timing is
the executor's own, not libvirt's."""

from __future__ import annotations

import time

from sidecar.executor import Executor, ExecutorSettings
from sidecar.plan import make_plan
from sidecar.removals import DeviceRemovals
from tests.sidecar.samples import MACVTAP_IFACE, THREE_NIC_VMI, domain_xml


class FakeDomain:
    """Records (monotonic time, 'up'|'down') per updateDeviceFlags call; nothing else."""

    def __init__(self, xml: str) -> None:
        self.xml = xml
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
        self.calls.append((time.monotonic(), "down" if 'state="down"' in xml else "up"))
        return 0

    def detachDeviceFlags(self, xml: str, flags: int = 0) -> int:  # noqa: N802
        raise AssertionError("a link refresh detaches nothing")

    def attachDeviceFlags(self, xml: str, flags: int = 0) -> int:  # noqa: N802
        raise AssertionError("a link refresh attaches nothing")


def test_a_second_link_down_waits_out_the_guests_once_a_second_carrier_down_limit() -> None:
    xml = domain_xml(extra=MACVTAP_IFACE)
    plans = make_plan(domain_xml=xml, vmi=THREE_NIC_VMI, policy="pin", macs={}, pod_macs={})
    assert [p.action for p in plans] == ["link-refresh", "link-refresh"]
    dom = FakeDomain(xml)
    executor = Executor(ExecutorSettings(link_pause_s=0.1), DeviceRemovals())
    results = [executor.apply(dom, p) for p in plans]
    assert [r.result for r in results] == ["done", "done"]
    downs = [t for t, state in dom.calls if state == "down"]
    assert [state for _, state in dom.calls] == ["down", "up", "down", "up"]
    assert downs[1] - downs[0] >= 1.5
