"""NICs the guest releases: libvirt's DEVICE_REMOVED events, and the NICs to put back.

Handed from libvirt's event thread (the watcher records each removal) to the executor (which
waits for one after a detach) and to the dispatcher (which queues putting back a NIC released
too late). Bookkeeping only: nothing here calls libvirt.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LateRemoval:
    """A NIC the guest released after the executor had given up waiting: put it back."""

    domain: str
    alias: str
    xml: str
    flags: int


class DeviceRemovals:
    """DEVICE_REMOVED events, handed from the libvirt event thread to the executor.

    A detach the guest has not honoured within the timeout stays pending in the guest (ACPI
    unplug) and may complete later; such NICs are "guarded", and when their removal arrives
    `on_late` is told (it must hand the work to another thread: it runs on libvirt's).
    """

    def __init__(self, on_late: Callable[[LateRemoval], None] | None = None) -> None:
        self._cond = threading.Condition()
        self._removed: set[tuple[str, str]] = set()
        self._guards: dict[tuple[str, str], LateRemoval] = {}
        self._losses = 0  # libvirt connections lost so far: a wait for an event ends on a loss
        self.on_late = on_late

    def expect(self, domain: str, alias: str) -> None:
        with self._cond:
            self._removed.discard((domain, alias))
            self._guards.pop((domain, alias), None)

    def pending(self, domain: str, alias: str) -> LateRemoval | None:
        """The guard of an earlier unplug request the guest has not honoured yet, if any."""
        with self._cond:
            return self._guards.get((domain, alias))

    def guard(self, late: LateRemoval) -> None:
        with self._cond:
            self._guards[(late.domain, late.alias)] = late

    def removed(self, domain: str, alias: str) -> None:
        """Called from the event callback: records only, never calls libvirt."""
        with self._cond:
            self._removed.add((domain, alias))
            late = self._guards.pop((domain, alias), None)
            self._cond.notify_all()
        if late is not None:
            if self.on_late is not None:
                self.on_late(late)
            else:
                log.critical("%s was released late and nothing is set up to put it back", alias)

    def connection_lost(self) -> None:
        """The libvirt connection went away: no DEVICE_REMOVED will come on it, stop waiting."""
        with self._cond:
            self._losses += 1
            self._cond.notify_all()

    def guarded(self) -> list[LateRemoval]:
        with self._cond:
            return list(self._guards.values())

    def wait(self, domain: str, alias: str, timeout: float) -> bool:
        """True once the device is removed; False on timeout or when the connection is lost."""
        with self._cond:
            losses = self._losses
            self._cond.wait_for(lambda: (domain, alias) in self._removed or self._losses != losses, timeout)
            return (domain, alias) in self._removed
