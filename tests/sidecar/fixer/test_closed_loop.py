"""The closed loop without root: each step checked through the guest agent, escalation, memory.

Against `FakeDomain` (tests/sidecar/fakes.py, a FAKE libvirt domain with a FAKE guest agent: a
function standing for what `virDomainInterfaceAddresses(SRC_AGENT)` returns). The real agents of
the lab's Debian guests run in tests/lab (test_closed_loop_lab.py). What a user checks: the
record's result and each NIC's outcome, its steps and reason, the metrics, and that the next
migration of a VM that needed the reattach starts there.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from bridge_migration_contract import AnnotationKeys
from sidecar.core.models import FixupRecord, InterfaceFixup
from sidecar.core.removals import DeviceRemovals
from sidecar.fixer import memory
from sidecar.fixer.build import Source, assemble
from sidecar.fixer.engine import Fixer
from sidecar.fixer.guestagent import AgentReader
from sidecar.fixer.metrics import Metrics
from sidecar.fixer.settings import FixerSettings
from tests.sidecar.fakes import FakeDomain, libvirt_error
from tests.sidecar.samples import GUEST_MAC, domain_xml, vmi

OLD, NEW = "10.244.1.7", "10.244.2.9"
FAST = FixerSettings(
    link_pause_s=0,
    resume_settle_s=0,
    link_down_spacing_s=0,
    detach_timeout_s=0.5,
    verify_window_s=0.6,
    stale_after_s=0.3,
    reattach_verify_window_s=0.6,
)


def agent_answer(address: str | None, mac: str = GUEST_MAC) -> dict[str, object]:
    """libvirt-python's shape for one NIC (plus lo), as the lab's Debian guests' agents answer."""
    addrs = [] if address is None else [{"type": 0, "addr": address, "prefix": 24}]
    return {
        "lo": {"hwaddr": "00:00:00:00:00:00", "addrs": [{"type": 0, "addr": "127.0.0.1", "prefix": 8}]},
        "ens3": {"hwaddr": mac, "addrs": addrs},
    }


@dataclass
class Rig:
    dom: FakeDomain
    fixer: Fixer
    stop: Callable[[], None]

    def fixup(self, **kwargs: object) -> FixupRecord:
        return self.fixer.run(trigger="manual", force=True, **kwargs)  # type: ignore[arg-type]

    def metric(self, name: str) -> list[str]:
        return [line for line in self.fixer.metrics.exposition().decode().splitlines() if line.startswith(name)]


def make_rig(*, refresh: str | None = None, settings: FixerSettings = FAST, pod_address: str | None = NEW) -> Rig:
    removals = DeviceRemovals()
    dom = FakeDomain(domain_xml(), events=removals)
    annotations = {
        "bridge-migration.kubevirt.io/mac-policy": "pin",
        "bridge-migration.kubevirt.io/macs": json.dumps({"default": GUEST_MAC}),
    }
    if refresh is not None:
        annotations["bridge-migration.kubevirt.io/nic-refresh"] = refresh
    engine = assemble(
        settings=settings,
        removals=removals,
        domain=lambda: dom,
        source=Source(
            vmi=lambda: vmi(annotations=annotations),
            annotations_file=None,
            links=dict,
            keys=AnnotationKeys(),
            kubevirt_family="v1.9+",
            pod_address=lambda _link: pod_address,
        ),
        metrics=Metrics(),
    )
    engine.dispatcher.start()

    def stop() -> None:
        dom.join()
        engine.dispatcher.stop(timeout=10)

    return Rig(dom, engine.fixer, stop)


@pytest.fixture
def rig() -> Iterator[Rig]:
    the_rig = make_rig()
    yield the_rig
    the_rig.stop()


def only(record: FixupRecord) -> InterfaceFixup:
    [iface] = record.interfaces
    return iface


def renews_after(dom: FakeDomain, event: str, *, old: str = OLD, new: str = NEW) -> Callable[[], object]:
    """A guest that holds ``old`` until it noticed ``event`` (carrier-up, nic-up), then ``new``."""
    return lambda: agent_answer(new if any(s.startswith(event) for s in dom.guest_saw) else old)


def test_a_guest_that_renews_on_the_flap_is_verified_after_the_link_refresh(rig: Rig) -> None:
    rig.dom.agent = renews_after(rig.dom, "carrier-up")
    record = rig.fixup()
    nic = only(record)
    assert (record.result, nic.outcome, nic.address) == ("verified", "verified", NEW)
    assert [s.action for s in nic.steps] == ["link-refresh"]
    assert nic.verified_ms is not None and nic.verified_ms > 0
    assert f"default: verified in {nic.verified_ms:.0f} ms after link-refresh: holds {NEW}" == record.message
    assert rig.metric('bridge_migration_interface_outcomes_total{outcome="verified",step="link-refresh"}') != []
    assert rig.metric("bridge_migration_time_to_verified_seconds_count") == [
        "bridge_migration_time_to_verified_seconds_count 1.0"
    ]


def test_without_an_agent_the_nic_is_unverified_after_one_step_and_the_record_says_why(rig: Rig) -> None:
    record = rig.fixup()  # the FakeDomain's agent is None: libvirt's "not connected"
    nic = only(record)
    assert (record.result, nic.outcome, [s.action for s in nic.steps]) == ("unverified", "unverified", ["link-refresh"])
    assert "QEMU guest agent is not connected" in nic.outcome_reason
    assert rig.dom.guest_saw == ["carrier-down ua-default", "carrier-up ua-default"]


def test_a_guest_that_ignores_the_flap_is_reattached_then_verified_and_the_next_migration_starts_there(
    rig: Rig,
) -> None:
    rig.dom.agent = renews_after(rig.dom, "nic-up")  # NetworkManager: a flap changes nothing
    record = rig.fixup()
    nic = only(record)
    assert (record.result, nic.outcome) == ("verified", "verified")
    assert [(s.action, s.outcome) for s in nic.steps] == [("link-refresh", "stale"), ("reattach", "verified")]
    assert nic.new_mac == GUEST_MAC
    assert memory.recall(rig.dom) == {"ua-default": "reattach"}
    # The next migration of this VM: the memory travels in the domain; no link refresh first.
    rig.dom.guest_saw.clear()
    again = only(rig.fixup())
    assert [(s.action, s.outcome) for s in again.steps] == [("reattach", "verified")]
    assert not any(s.startswith("carrier") for s in rig.dom.guest_saw)


def test_under_nic_refresh_link_a_stale_guest_is_not_escalated_but_reported_failed() -> None:
    rig = make_rig(refresh="link")
    try:
        rig.dom.agent = lambda: agent_answer(OLD)
        record = rig.fixup()
    finally:
        rig.stop()
    nic = only(record)
    assert (record.result, nic.outcome, [s.action for s in nic.steps]) == ("failed", "failed", ["link-refresh"])
    assert nic.outcome_reason == f"still stale after link-refresh: kept {OLD} through the step (expected {NEW})"
    assert memory.recall(rig.dom) == {}


def test_a_statically_configured_guest_stops_after_the_last_step_failed_with_the_reason(rig: Rig) -> None:
    static = "192.168.7.7"
    rig.dom.agent = lambda: agent_answer(static)
    record = rig.fixup()
    nic = only(record)
    assert (record.result, nic.outcome) == ("failed", "failed")
    assert [s.action for s in nic.steps] == ["link-refresh", "reattach"]
    assert nic.outcome_reason.startswith("still stale after link-refresh, reattach: ")
    assert static in nic.outcome_reason and NEW in nic.outcome_reason
    assert rig.metric('bridge_migration_interface_outcomes_total{outcome="failed",step="reattach"}') != []


def test_an_agent_that_lists_no_interfaces_leaves_the_nic_unverified_not_escalated(rig: Rig) -> None:
    rig.dom.agent = dict
    nic = only(rig.fixup())
    assert (nic.outcome, nic.outcome_reason) == (
        "unverified",
        "no answer from the guest agent (the guest agent lists no interfaces)",
    )
    assert len(nic.steps) == 1


@pytest.mark.parametrize(
    "garbage",
    [None, "nonsense", {"ens3": "x"}, {"ens3": {"hwaddr": GUEST_MAC, "addrs": [{"type": 0, "addr": "not-an-ip"}]}}],
)
def test_garbage_from_the_agent_never_verifies_and_never_escalates_forever(rig: Rig, garbage: object) -> None:
    rig.dom.agent = lambda: garbage
    nic = only(rig.fixup())
    assert nic.outcome in ("unverified", "failed")
    assert len(nic.steps) <= 2


def test_an_agent_error_is_an_unverified_nic_with_libvirts_text(rig: Rig) -> None:
    def broken() -> object:
        raise libvirt_error(1, "internal error: unable to parse the agent's reply")

    rig.dom.agent = broken
    nic = only(rig.fixup())
    assert nic.outcome == "unverified"
    assert "unable to parse the agent's reply" in nic.outcome_reason


def test_a_hanging_agent_is_given_up_on_after_the_deadline_and_not_asked_again() -> None:
    release = threading.Event()
    calls: list[int] = []

    def hang() -> object:
        calls.append(1)
        release.wait(10)
        return agent_answer(NEW)

    removals = DeviceRemovals()
    dom = FakeDomain(domain_xml(), events=removals)
    dom.agent = hang
    reader = AgentReader(timeout_s=0.2)
    first = reader(dom)
    second = reader(dom)
    release.set()
    assert (first.answered, first.error) == (False, "the guest agent did not answer within 0.2 s")
    assert (second.answered, second.error) == (False, "an earlier guest agent call has not returned yet")
    assert len(calls) == 1


def test_on_the_node_the_pod_network_nic_must_show_an_address_it_did_not_have_before() -> None:
    rig = make_rig(pod_address="changed")
    try:
        rig.dom.agent = renews_after(rig.dom, "carrier-up")
        nic = only(rig.fixup())
    finally:
        rig.stop()
    assert (nic.outcome, nic.outcome_reason) == ("verified", f"holds {NEW}, new since the migration")
