"""From libvirt lifecycle events to fixups: which event means "the guest has landed here".

Pre-copy: STARTED/MIGRATED announces the incoming domain (still paused), RESUMED/MIGRATED
says it runs here: fix then. Post-copy: RESUMED/POSTCOPY comes while memory is still being
pulled from the source, so we wait; libvirt emits RESUMED/MIGRATED on the destination when
the post-copy phase completes (its documentation of virDomainMigrateStartPostCopy lists the
events), and that is when we act. RESUMED/POSTCOPY_FAILED and SUSPENDED/POSTCOPY_FAILED mean
the guest is in trouble; we log and leave the NICs alone.

Paused: KubeVirt migrates a paused VMI with VIR_MIGRATE_PAUSED (docs/kubevirt-facts.md L3). The
target then sees STARTED/MIGRATED and SUSPENDED/PAUSED, never RESUMED/MIGRATED; the guest runs
again only when the user unpauses it, as RESUMED/UNPAUSED. So an arrival stays "awaiting its
resume" until RESUMED/MIGRATED or, for a paused one, RESUMED/UNPAUSED: that unpause is the fix.
A pause and unpause of a VM that did not just arrive stays ignored.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from sidecar.core.errors import LibvirtUnavailableError, NoDomainError
from sidecar.core.events import LifecycleEvent
from sidecar.core.models import Trigger
from sidecar.core.removals import LateRemoval
from sidecar.core.verdicts import classify

log = logging.getLogger(__name__)

RunFixup = Callable[[Trigger, float], object]


@dataclass(frozen=True)
class CatchUp:
    """The domain already runs here after a migration we did not see the end of (the
    sidecar or libvirt restarted meanwhile); fix it unless this arrival was already fixed."""

    domain: str
    at: float


@dataclass(frozen=True)
class AwaitResume:
    """The domain is paused here and may have arrived paused (seen on a reconnect): its next
    unpause gets a fixup (a no-op when this arrival was already fixed)."""

    domain: str


@dataclass(frozen=True)
class Settle:
    """libvirt is back: put back NICs a reattach left detached when the connection dropped."""


class Dispatcher:
    """Receives events on libvirt's thread, runs fixups on its own worker thread."""

    def __init__(
        self,
        *,
        run_fixup: RunFixup,
        incoming: Callable[[], None],
        restore: Callable[[LateRemoval], None] | None = None,
        settle: Callable[[], None] | None = None,
    ) -> None:
        self._run_fixup = run_fixup
        self._incoming = incoming
        self._restore = restore
        self._settle = settle
        self._queue: queue.Queue[LifecycleEvent | CatchUp | AwaitResume | LateRemoval | Settle | None] = queue.Queue()
        self._postcopy: set[str] = set()
        # Domains that arrived (STARTED/MIGRATED) and have not resumed from it yet.
        self._awaiting_resume: set[str] = set()
        self._thread = threading.Thread(target=self._work, name="fixup-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)

    def on_lifecycle(self, ev: LifecycleEvent) -> None:
        """Event-loop thread: classify, do bookkeeping, enqueue. Never calls libvirt."""
        verdict = classify(ev.event, ev.detail)
        if verdict == "incoming":
            self._incoming()
        if verdict != "ignore":
            self._queue.put(ev)

    def await_resume(self, domain: str) -> None:
        self._queue.put(AwaitResume(domain))

    def catch_up(self, domain: str, at: float) -> None:
        self._queue.put(CatchUp(domain, at))

    def settle(self) -> None:
        self._queue.put(Settle())

    def late_removal(self, late: LateRemoval) -> None:
        """Event-loop thread (DEVICE_REMOVED of a guarded NIC): queue the re-attach."""
        self._queue.put(late)

    def _work(self) -> None:
        while True:
            ev = self._queue.get()
            if ev is None:
                return
            if isinstance(ev, CatchUp):
                self._fix("catch-up", ev.domain, ev.at)
                continue
            if isinstance(ev, AwaitResume):
                self._awaiting_resume.add(ev.domain)
                continue
            if isinstance(ev, Settle):
                if self._settle is not None:
                    self._settle()
                continue
            if isinstance(ev, LateRemoval):
                if self._restore is not None:
                    self._restore(ev)
                continue
            verdict = classify(ev.event, ev.detail)
            if verdict == "incoming":
                log.info("incoming migration of %s announced", ev.domain)
                self._awaiting_resume.add(ev.domain)
            elif verdict == "unpaused":
                if ev.domain in self._awaiting_resume:
                    log.info("%s arrived paused and is unpaused now: fixing up", ev.domain)
                    self._awaiting_resume.discard(ev.domain)
                    self._fix("unpaused-after-migration", ev.domain, ev.at)
            elif verdict == "postcopy-started":
                log.info("%s resumed in post-copy; fixing up once the migration completes", ev.domain)
                self._postcopy.add(ev.domain)
            elif verdict == "postcopy-failed":
                log.error("post-copy migration of %s failed; NICs left alone", ev.domain)
                self._postcopy.discard(ev.domain)
            elif verdict == "fix":
                trigger: Trigger = "postcopy-completed" if ev.domain in self._postcopy else "resumed-migrated"
                self._postcopy.discard(ev.domain)
                self._awaiting_resume.discard(ev.domain)
                self._fix(trigger, ev.domain, ev.at)

    def _fix(self, trigger: Trigger, domain: str, at: float) -> None:
        try:
            self._run_fixup(trigger, at)
        except (NoDomainError, LibvirtUnavailableError) as exc:
            log.error("automatic fixup of %s impossible: %s", domain, exc)
        except Exception:
            log.exception("automatic fixup of %s crashed", domain)
