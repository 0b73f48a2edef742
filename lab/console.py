"""The guest's serial console, tailed and stamped with host time.

The guest init writes ``LAB <uptime> <event> <words...>`` lines (see lab/guest/init). A
thread reads the console file as it grows and records each such line with the host's
wall-clock time it was seen, so guest events line up with libvirt events and sidecar fixups.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from lab.process import wait_for


@dataclass(frozen=True)
class GuestEvent:
    at: float  # host epoch seconds when the line was read
    kind: str  # boot, nic-up, carrier-up, dhcp-ack, dhcp-nak, dhcp-deconfig, ping-reply, ...
    args: tuple[str, ...]
    fields: dict[str, str] = field(default_factory=dict)
    # Position on the console: lines read in one chunk share ``at``, so order is (at, seq).
    seq: int = 0

    def after(self, other: GuestEvent) -> bool:
        """Whether this line came later on the console than ``other``."""
        return (self.at, self.seq) > (other.at, other.seq)

    def precedes(self, other: GuestEvent) -> bool:
        return other.after(self)

    @property
    def nic(self) -> str | None:
        """The guest NIC a line is about: the kernel's names (eth0, the busybox guest) or udev's
        predictable ones (ens3, enp1s0: the Debian guest)."""
        return self.args[0] if self.args and self.args[0].startswith(("eth", "en")) else None


def parse_line(line: str, at: float) -> GuestEvent | None:
    words = line.strip().split()
    if "LAB" not in words:
        return None
    words = words[words.index("LAB") + 1 :]
    if len(words) < 2:
        return None
    args = tuple(words[2:])
    fields = dict(w.split("=", 1) for w in args if "=" in w)
    return GuestEvent(at=at, kind=words[1], args=args, fields=fields)


class ConsoleTail:
    """Follows one console file until stopped; thread-safe readers."""

    def __init__(self, path: Path, *, interval: float = 0.05) -> None:
        self.path = path
        self._interval = interval
        self._events: list[GuestEvent] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"console {path.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        offset = 0
        partial = b""
        while not self._stop.is_set():
            try:
                with self.path.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read()
            except FileNotFoundError:
                chunk = b""
            if chunk:
                offset += len(chunk)
                now = time.time()
                lines = (partial + chunk).split(b"\n")
                partial = lines.pop()
                parsed = [parse_line(raw.decode(errors="replace"), now) for raw in lines]
                with self._lock:
                    for event in parsed:
                        if event is not None:
                            self._events.append(replace(event, seq=len(self._events)))
            self._stop.wait(self._interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def events(
        self,
        kind: str | None = None,
        *,
        since: float = 0.0,
        nic: str | None = None,
        where: Callable[[GuestEvent], bool] | None = None,
    ) -> list[GuestEvent]:
        with self._lock:
            snapshot = list(self._events)
        return [
            e
            for e in snapshot
            if (kind is None or e.kind == kind)
            and e.at >= since
            and (nic is None or e.nic == nic)
            and (where is None or where(e))
        ]

    def first(
        self,
        kind: str,
        *,
        since: float = 0.0,
        nic: str | None = None,
        where: Callable[[GuestEvent], bool] | None = None,
    ) -> GuestEvent | None:
        found = self.events(kind, since=since, nic=nic, where=where)
        return found[0] if found else None

    def wait(
        self,
        kind: str,
        *,
        since: float = 0.0,
        nic: str | None = None,
        where: Callable[[GuestEvent], bool] | None = None,
        timeout: float,
    ) -> GuestEvent:
        wait_for(
            lambda: self.first(kind, since=since, nic=nic, where=where),
            timeout=timeout,
            what=f"guest console event {kind!r} in {self.path.name}",
        )
        event = self.first(kind, since=since, nic=nic, where=where)
        assert event is not None
        return event
