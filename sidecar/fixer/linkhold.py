"""How long a link refresh keeps the link down, and keeping it down against KubeVirt's reconcile.

Two things happen during the hold, every ``hold_poll_s``:

- **Guard.** virt-handler syncs a running VMI on many events, and each sync sets every
  interface's live link state back to the spec's (docs/kubevirt-facts.md R1, R2, R8); no outside
  process can take the lock KubeVirt holds for its own changes (R5). So the fixer reads the live
  link state; when someone raised the link before the hold ended, it sets it down again and the
  hold starts over: a guest that reads its link late would otherwise see no flap at all.
- **Evidence.** Right after a migration a guest handles virtio-net's link interrupt late (the lab
  saw flaps of 100 and 500 ms missed, docs/lab.md). Holding until a fixed time after the resume
  protects slow guests and costs every guest. The hold ends early once the guest's vCPUs have been
  idle for two polls in a row after the link-down: a guest with work pending (the link interrupt
  among it) keeps its vCPU busy. The evidence comes from libvirt's per-vCPU run time, which every
  delivery mode can read. Never before the pause, never after the settle time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sidecar.core.domxml import parse_interfaces
from sidecar.core.models import HoldEnd
from sidecar.fixer.settings import FixerSettings

log = logging.getLogger(__name__)

_IDLE_POLLS = 2  # consecutive idle windows that count as evidence


class HoldDomain(Protocol):
    def XMLDesc(self, flags: int = 0) -> str: ...  # noqa: N802 - libvirt's name
    def vcpus(self) -> Any: ...


@dataclass(frozen=True)
class HoldReport:
    held_s: float
    ended_by: HoldEnd
    reasserted: int


def vcpu_seconds(dom: HoldDomain) -> float | None:
    """The guest's vCPU run time in seconds (libvirt's virDomainGetVcpus); None when unknown."""
    try:
        info, _maps = dom.vcpus()
        return sum(float(v[2]) for v in info) / 1e9
    except Exception:  # not supported here (a fake, an old driver): no evidence, not an error
        return None


def link_is_down(dom: HoldDomain, alias: str) -> bool | None:
    """The live link state of ``alias``: True down, False up (or unset), None not readable/absent."""
    try:
        xml = dom.XMLDesc(0)
    except Exception:
        return None
    for iface in parse_interfaces(xml):
        if iface.alias == alias:
            return iface.link_state == "down"
    return None


class _IdleWatch:
    """Consecutive polls in which the guest's vCPUs ran less than ``ratio`` of the wall time."""

    def __init__(self, dom: HoldDomain, ratio: float) -> None:
        self._dom, self._ratio = dom, ratio
        self._last: tuple[float, float] | None = None
        self.idle_polls = 0

    def restart(self) -> None:
        self._last, self.idle_polls = None, 0

    def sample(self) -> None:
        cpu, now = vcpu_seconds(self._dom), time.monotonic()
        if cpu is None:
            return
        if self._last is not None:
            last_cpu, last_now = self._last
            wall = now - last_now
            busy = (cpu - last_cpu) / wall if wall > 0 else 1.0
            self.idle_polls = self.idle_polls + 1 if busy < self._ratio else 0
        self._last = (cpu, now)


def hold(
    dom: HoldDomain,
    alias: str,
    *,
    settings: FixerSettings,
    resumed_at: float | None,
    set_down: Callable[[], object],
) -> HoldReport:
    """Keep ``alias`` down (it was just set down) until the hold is over; ``set_down`` sets it down
    again when someone raised it. ``resumed_at`` (wall clock): when the guest resumed after a
    migration; None for a fixup asked for by hand, which holds for the pause only."""
    down_at = time.monotonic()
    floor = down_at + settings.link_pause_s
    ceiling = floor
    if resumed_at is not None:
        ceiling = max(floor, down_at + resumed_at + settings.resume_settle_s - time.time())
    watch = _IdleWatch(dom, settings.idle_ratio) if resumed_at is not None and settings.adaptive_hold else None
    reasserted = 0
    ended_by: HoldEnd = "settle" if ceiling > floor else "pause"
    while (now := time.monotonic()) < ceiling:
        if watch is not None and now >= floor and watch.idle_polls >= _IDLE_POLLS:
            ended_by = "guest-idle"
            break
        time.sleep(min(settings.hold_poll_s, ceiling - now))
        if link_is_down(dom, alias) is False:
            reasserted += 1
            log.warning(
                "%s: another client raised the link %.0f ms into the hold; setting it down again",
                alias,
                (time.monotonic() - down_at) * 1000,
            )
            set_down()
            # The guest may have seen nothing: the hold starts over, within the settle bound or a pause.
            floor = time.monotonic() + settings.link_pause_s
            ceiling = max(ceiling, floor)
            if watch is not None:
                watch.restart()
            continue
        if watch is not None and time.monotonic() >= down_at + settings.link_pause_s / 2:
            watch.sample()
    return HoldReport(time.monotonic() - down_at, ended_by, reasserted)
