"""The connectivity gap at 10 ms resolution, measured from outside the guest.

The guest's own ping loop (one echo, 1 s timeout, 0.3 s pause) blurs the gap by up to 1.3 s and
stops counting while the guest is paused for the handover. Here the measure is the one
openshift-virtualization-tests calls stun time: an echo every 10 ms from a fixed point, and the gap
is (echoes lost + 1) x 10 ms between the last reply before the disruption and the first after it.

A bridge-bound guest comes back at a *new* address (the target pod's), so two streams run from
the server's node: one to the source pod's address, one to the target pod's. Both are timestamped
by ``ping -D`` on the same clock, and the gap is the time from the last reply of the old address to
the first of the new one, in whole intervals: with one stream and no reordering that is exactly
(lost + 1) x interval. Where the address stays (a secondary network whose server keeps it, lab.l2)
one stream runs, and the gap is its longest silence from the migration on.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from lab.process import stop

INTERVAL_S: Final = 0.01
# "[1795736311.123456] 64 bytes from 10.244.2.11: icmp_seq=5 ttl=63 time=0.512 ms"
_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from [\d.]+: icmp_seq=(\d+)")


@dataclass
class EchoStream:
    """``ping -D -i 0.01`` from a network namespace to one address; reply times collected."""

    netns: str
    address: str
    interval_s: float = INTERVAL_S
    replies: list[float] = field(default_factory=list)
    _proc: subprocess.Popen[str] | None = None
    _reader: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        _RUNNING.append(self)
        # -n: no DNS; -W 1: an echo is lost after 1 s. Root may go below ping's 200 ms floor.
        cmd = ["ip", "netns", "exec", self.netns, "ping", "-n", "-D", "-W", "1", "-i", f"{self.interval_s}"]
        self._proc = subprocess.Popen(
            [*cmd, self.address], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1
        )
        self._reader = threading.Thread(target=self._read, name=f"echo-{self.address}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            m = _REPLY.match(line)
            if m:
                with self._lock:
                    self.replies.append(float(m[1]))

    def stop(self) -> list[float]:
        _RUNNING[:] = [stream for stream in _RUNNING if stream is not self]
        if self._proc is not None:
            stop(self._proc, grace=5)
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self._proc is not None and self._proc.stdout is not None and not (self._reader and self._reader.is_alive()):
            self._proc.stdout.close()  # the pipe, read to its end: left open it is a ResourceWarning
        with self._lock:
            return list(self.replies)


# Streams started and not stopped yet. A scenario that fails between the two leaves its streams to
# Lab.close (stop_all): a ping left running and a pipe left to the garbage collector would surface
# as an unraisable ResourceWarning in whichever later test happens to be running then.
_RUNNING: list[EchoStream] = []


def stop_all() -> None:
    """Stop every stream still running (Lab.close calls it)."""
    for stream in list(_RUNNING):
        stream.stop()


def gap_ms(old: list[float], new: list[float], *, interval_s: float = INTERVAL_S) -> int | None:
    """Milliseconds from the last reply of the old address to the first of the new, in whole
    intervals (the stun time); None when the new address never answered."""
    if not new:
        return None
    first_new = min(new)
    before = [t for t in old if t <= first_new]
    if not before:
        return None  # no reply before the disruption: nothing to measure from
    intervals = round((first_new - max(before)) / interval_s)
    return max(intervals, 1) * round(interval_s * 1000)


def silence_ms(replies: list[float], *, since: float, until: float, interval_s: float = INTERVAL_S) -> int | None:
    """The longest silence of one stream that ends after ``since``, in whole intervals: the stun
    time of an address that stays. None when nothing answered before ``since``, or when the
    stream was silent for its last second up to ``until`` (the address did not come back)."""
    times = sorted(replies)
    if not times or until - times[-1] > 1.0:
        return None
    gaps = [b - a for a, b in itertools.pairwise(times) if b >= since]
    if not gaps or not any(t < since for t in times):
        return None
    return max(round(max(gaps) / interval_s), 1) * round(interval_s * 1000)


class HasAddress(Protocol):
    @property
    def ip(self) -> str: ...


class StunProbe:
    """The two echo streams of one migration: the source pod's address from the start, the
    target pod's from the moment that pod exists (``target``)."""

    def __init__(self, netns: str, source_address: str, address_in: Callable[[Any], str] | None = None) -> None:
        """``address_in`` gives the address the guest will have in the target pod (default: the
        pod's IP); when it is the source address, one stream measures the silence."""
        self._netns = netns
        self._source = source_address
        self._address_in = address_in or (lambda pod: pod.ip)
        self._old = EchoStream(netns, source_address)
        self._new: EchoStream | None = None
        self._since: float | None = None
        # Set by finish(): when the target pod's address first answered (wall clock), for
        # comparing the fixer's own "verified" time with what the outside saw.
        self.first_new_reply: float | None = None
        self._old.start()

    def target(self, pod: HasAddress) -> None:
        """Start echoing the target pod's address (``Lab.migrate``'s ``on_target``)."""
        address = self._address_in(pod)
        if address == self._source:
            self._since = time.time()
            return
        self._new = EchoStream(self._netns, address)
        self._new.start()

    def finish(self, *, expect_reply: bool, wait_s: float = 3.0) -> int | None:
        """Stop both streams and return the stun time; with ``expect_reply`` (the guest already
        answered from the target), wait a little for the probe's own first reply there."""
        new = self._new
        if self._since is not None:
            if expect_reply:
                time.sleep(min(wait_s, 0.5))  # a last reply or two after the guest's own
            return silence_ms(self._old.stop(), since=self._since, until=time.time())
        if expect_reply and new is not None:
            deadline = time.monotonic() + wait_s
            while not new.replies and time.monotonic() < deadline:
                time.sleep(0.05)
        old_replies = self._old.stop()
        new_replies = new.stop() if new is not None else []
        self.first_new_reply = min(new_replies) if new_replies else None
        return gap_ms(old_replies, new_replies)
