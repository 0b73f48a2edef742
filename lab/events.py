"""libvirt domain lifecycle events of one daemon, recorded with host time.

libvirt calls the callback on its event-loop thread; it only appends to a list (calling
libvirt from inside a callback can deadlock), and waiters poll that list.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Any

import libvirt

from lab.process import wait_for

_loop_lock = threading.Lock()
_loop_started = False


def _quiet(_ctx: object, _err: object) -> None:
    # libvirt prints every error to stderr by default; the lab reports the ones it raises.
    return None


def ensure_event_loop() -> None:
    """Register libvirt's default event loop and run it on a daemon thread, once per process."""
    global _loop_started  # noqa: PLW0603 - libvirt allows one event implementation per process
    with _loop_lock:
        if _loop_started:
            return
        libvirt.registerErrorHandler(_quiet, None)
        libvirt.virEventRegisterDefaultImpl()

        def loop() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=loop, name="libvirt-event-loop", daemon=True).start()
        _loop_started = True


_EVENTS = {0: "DEFINED", 1: "UNDEFINED", 2: "STARTED", 3: "SUSPENDED", 4: "RESUMED", 5: "STOPPED", 6: "SHUTDOWN"}


def _detail_names() -> dict[tuple[str, int], str]:
    """(event name, detail number) -> detail name, read from the binding's constants."""
    names: dict[tuple[str, int], str] = {}
    for attr in dir(libvirt):
        for event in _EVENTS.values():
            prefix = f"VIR_DOMAIN_EVENT_{event}_"
            if attr.startswith(prefix) and isinstance(getattr(libvirt, attr), int):
                names[(event, getattr(libvirt, attr))] = attr[len(prefix) :]
    return names


_DETAILS = _detail_names()


@dataclass(frozen=True)
class LifecycleEvent:
    at: float  # host epoch seconds
    domain: str
    event: str  # STARTED, RESUMED, ...
    detail: str  # MIGRATED, BOOTED, ...

    def __str__(self) -> str:
        return f"{self.event}/{self.detail}"


class EventLog:
    """Lifecycle events of every domain on one connection."""

    def __init__(self, conn: Any) -> None:
        self._events: list[LifecycleEvent] = []
        self._lock = threading.Lock()
        self._conn = conn
        self._callback_id: int = conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
        )

    def _on_lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: object) -> None:
        name = _EVENTS.get(event, str(event))
        record = LifecycleEvent(
            at=time.time(), domain=dom.name(), event=name, detail=_DETAILS.get((name, detail), str(detail))
        )
        with self._lock:
            self._events.append(record)

    def events(self) -> list[LifecycleEvent]:
        with self._lock:
            return list(self._events)

    def find(self, event: str, detail: str | None = None) -> LifecycleEvent | None:
        for e in self.events():
            if e.event == event and (detail is None or e.detail == detail):
                return e
        return None

    def wait(self, event: str, detail: str | None = None, *, timeout: float) -> LifecycleEvent:
        wait_for(lambda: self.find(event, detail), timeout=timeout, what=f"libvirt event {event}/{detail}")
        found = self.find(event, detail)
        assert found is not None
        return found

    def close(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self._conn.domainEventDeregisterAny(self._callback_id)
