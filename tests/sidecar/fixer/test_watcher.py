"""The libvirt watcher against libvirt's test driver: events arrive, the domain is found."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import libvirt
import pytest

from sidecar.core.errors import NoDomainError
from sidecar.core.events import LifecycleEvent
from sidecar.core.removals import DeviceRemovals
from sidecar.fixer.watcher import LibvirtWatcher


class Collected:
    def __init__(self) -> None:
        self.events: list[LifecycleEvent] = []
        self.cond = threading.Condition()

    def add(self, ev: LifecycleEvent) -> None:
        with self.cond:
            self.events.append(ev)
            self.cond.notify_all()

    def wait_for(self, event: int, detail: int) -> LifecycleEvent:
        with self.cond:
            assert self.cond.wait_for(
                lambda: any((e.event, e.detail) == (event, detail) for e in self.events), timeout=10
            ), self.events
            return next(e for e in self.events if (e.event, e.detail) == (event, detail))


@pytest.fixture
def watched() -> Iterator[tuple[LibvirtWatcher, Collected]]:
    collected = Collected()
    watcher = LibvirtWatcher(
        uri="test:///default", domain_name=None, on_lifecycle=collected.add, removals=DeviceRemovals()
    )
    watcher.start()
    assert watcher.connected_once.wait(10)
    yield watcher, collected
    watcher.stop()


def test_lifecycle_events_reach_the_callback_with_the_domain_name(
    watched: tuple[LibvirtWatcher, Collected],
) -> None:
    watcher, collected = watched
    dom = watcher.connection().lookupByName("test")
    dom.suspend()
    dom.resume()
    ev = collected.wait_for(libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_UNPAUSED)
    assert ev.domain == "test"
    assert ev.at > 0


def test_the_only_domain_is_found_without_a_name(watched: tuple[LibvirtWatcher, Collected]) -> None:
    watcher, _ = watched
    assert watcher.domain().name() == "test"
    assert watcher.connected


def test_a_named_domain_that_does_not_exist_is_a_no_domain_error() -> None:
    watcher = LibvirtWatcher(
        uri="test:///default", domain_name="absent", on_lifecycle=lambda ev: None, removals=DeviceRemovals()
    )
    watcher.start()
    try:
        assert watcher.connected_once.wait(10)
        with pytest.raises(NoDomainError, match="absent"):
            watcher.domain()
    finally:
        watcher.stop()


def test_several_domains_without_a_name_is_a_no_domain_error_that_says_so(
    watched: tuple[LibvirtWatcher, Collected],
) -> None:
    watcher, _ = watched
    conn = watcher.connection()
    extra = conn.defineXML(
        "<domain type='test'><name>second</name><memory>1024</memory><os><type>hvm</type></os></domain>"
    )
    try:
        with pytest.raises(NoDomainError, match=r"several domains \(second, test\); start the sidecar with --domain"):
            watcher.domain()
    finally:
        extra.undefine()
    assert watcher.domain().name() == "test"
