"""The fixup engine: one fixup at a time, no repeats, every run recorded.

It ties the pure plan to the executor. Triggers (libvirt events, REST, the hook) all come
through `Fixer.run`; a lock serializes them, and a run that finds the current migration
already fixed is a no-op unless forced.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge_migration_contract import (
    DEFAULT_KEYS,
    NEWEST_FAMILY,
    AnnotationKeys,
    FixupAction,
    KubevirtFamily,
    MacPolicy,
    NicRefresh,
)
from sidecar.core import podinfo
from sidecar.core.domain import Domain, DomainState
from sidecar.core.errors import DomainNotRunningError, UnknownInterfaceError
from sidecar.core.models import FixupRecord, FixupResult, InterfaceFixup, Trigger
from sidecar.core.plan import InterfacePlan, known_interface_names, make_plan, multus_pod_links
from sidecar.core.removals import LateRemoval
from sidecar.core.verify import UNKNOWN, Expected, ladder
from sidecar.fixer import guestagent, memory, podlinks
from sidecar.fixer.closedloop import ClosedLoop
from sidecar.fixer.executor import Executor, modify_flags
from sidecar.fixer.guestagent import AgentView
from sidecar.fixer.metrics import Metrics
from sidecar.fixer.podlinks import PodLink, pod_macs

log = logging.getLogger(__name__)

# How a refusal to fix a domain that does not run says its state.
_STATE_NAMES: dict[int, str] = {
    DomainState.NOSTATE: "nostate",
    DomainState.BLOCKED: "blocked",
    DomainState.PAUSED: "paused",
    DomainState.SHUTDOWN: "shutting down",
    DomainState.SHUTOFF: "shut off",
    DomainState.CRASHED: "crashed",
    DomainState.PMSUSPENDED: "suspended",
}
# Triggers whose time is a libvirt event: they feed the event-to-done histogram.
_EVENT_TRIGGERS: frozenset[Trigger] = frozenset({"resumed-migrated", "postcopy-completed", "unpaused-after-migration"})


@dataclass(frozen=True)
class _RunContext:
    """What a fixup record says about the run before its outcome is known."""

    trigger: Trigger
    trigger_time: float
    started: float
    domain: str | None
    policy: MacPolicy
    dry_run: bool
    forced: bool


@dataclass(frozen=True)
class _Request:
    """One call of `Fixer.run`, as the lock-holding part reads it."""

    trigger: Trigger
    trigger_time: float
    resumed_at: float | None
    interfaces: list[str] | None
    dry_run: bool
    force: bool


def _require_running(dom: Domain) -> None:
    state, _reason = dom.state()
    if state != DomainState.RUNNING:
        # An incoming migration keeps the domain paused until it resumes; device changes then
        # fail or race the migration job. The resume event fixes it.
        name = _STATE_NAMES.get(state, str(state))
        raise DomainNotRunningError(f"domain {dom.name()} is {name}, not running: nothing to fix yet")


def overall_result(interfaces: list[InterfaceFixup]) -> FixupResult:
    """A run is verified when every NIC it refreshed was; failed when one failed or stayed stale."""
    outcomes = [i.outcome for i in interfaces if i.outcome is not None]
    if any(i.result in ("failed", "restored") for i in interfaces) or any(o in ("failed", "stale") for o in outcomes):
        return "failed"
    if outcomes and all(o == "verified" for o in outcomes):
        return "verified"
    return "unverified"


def summary(interfaces: list[InterfaceFixup]) -> str:
    """One clause per NIC for the log line and the record: its outcome, its steps, and why."""
    parts = []
    for i in interfaces:
        if i.error:
            parts.append(f"{i.name}: {i.error}")
            continue
        if i.outcome is None:
            parts.append(f"{i.name}: {i.result}" + (f" ({i.error})" if i.error else ""))
            continue
        steps = " -> ".join(s.action for s in i.steps)
        took = f" in {i.verified_ms:.0f} ms" if i.verified_ms is not None else ""
        parts.append(f"{i.name}: {i.outcome}{took} after {steps}: {i.outcome_reason}")
    return "; ".join(parts) if parts else "no interface to refresh"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Fixer:
    def __init__(
        self,
        *,
        executor: Executor,
        domain: Callable[[], Domain],
        vmi: Callable[[], Mapping[str, Any] | None],
        annotations_file: Path | None,
        keys: AnnotationKeys = DEFAULT_KEYS,
        links: Callable[[], dict[str, PodLink]],
        metrics: Metrics,
        history_size: int = 100,
        kubevirt_family: KubevirtFamily = NEWEST_FAMILY,
        ipv4_less: Callable[[Iterable[str]], frozenset[str]] = podlinks.ipv4_less,
        pod_address: Callable[[str], Expected] = podlinks.ipv4_of,
        read_agent: Callable[[Domain], AgentView] | None = None,
    ) -> None:
        self._executor = executor
        self._pod_address = pod_address
        self._loop = ClosedLoop(
            executor=executor, settings=executor.settings, read_agent=read_agent or guestagent.AgentReader()
        )
        self._ipv4_less = ipv4_less
        self._kubevirt_family = kubevirt_family
        self._domain = domain
        self._vmi = vmi
        self._annotations_file = annotations_file
        self._keys = keys
        self._links = links
        self.metrics = metrics
        self._lock = threading.Lock()
        self._history: collections.deque[FixupRecord] = collections.deque(maxlen=history_size)
        self._history_lock = threading.Lock()
        self._next_id = 1
        # A migration "generation": bumped when an incoming migration is announced, so
        # that every trigger for the same arrival maps to one fixup.
        self._generation = 0
        self._fixed: dict[int, set[str]] = {}

    # --- called by the watcher (event thread: bookkeeping only) ---
    def incoming_migration(self) -> None:
        with self._history_lock:
            self._generation += 1

    # --- queries ---
    def history(self) -> list[FixupRecord]:
        with self._history_lock:
            return list(self._history)

    def last(self) -> FixupRecord | None:
        with self._history_lock:
            return self._history[-1] if self._history else None

    def wait_idle(self, timeout: float) -> bool:
        """Wait for a running fixup to finish (used before exiting: never stop mid-reattach)."""
        if not self._lock.acquire(timeout=timeout):
            return False
        self._lock.release()
        return True

    # --- the one entry point for a fixup ---
    def run(
        self,
        *,
        trigger: Trigger,
        trigger_time: float | None = None,
        resumed_at: float | None = None,
        interfaces: list[str] | None = None,
        dry_run: bool = False,
        force: bool = False,
    ) -> FixupRecord:
        """Plan and (unless dry_run) execute; raises NoDomain/LibvirtUnavailable/UnknownInterface.

        ``resumed_at`` (wall clock) is when the guest resumed after the migration this run
        follows, as well as the trigger knows it; None for a fixup asked for by hand. A link
        refresh holds the link down until the resume settle time after it."""
        trigger_time = time.time() if trigger_time is None else trigger_time
        with self._lock:
            record = self._run_locked(
                _Request(trigger, trigger_time, resumed_at, interfaces, dry_run, force),
            )
        if not dry_run:
            self._account(record)
        return record

    def _run_locked(self, req: _Request) -> FixupRecord:
        started = time.time()
        dom = self._domain()
        domain_xml = dom.XMLDesc(0)
        vmi = self._vmi()
        info = podinfo.load(self._annotations_file, vmi=vmi, keys=self._keys)
        known = known_interface_names(vmi, domain_xml, info.skip_multus_bridges, info.interfaces)
        wanted = self._wanted(req.interfaces, known)
        if not req.dry_run:
            _require_running(dom)
        plans = self._plan(domain_xml=domain_xml, vmi=vmi, info=info, wanted=wanted)
        with self._history_lock:
            generation = self._generation
            done_before = self._fixed.get(generation, set())
        base = _RunContext(
            trigger=req.trigger,
            trigger_time=req.trigger_time,
            started=started,
            domain=dom.name(),
            policy=info.policy,
            dry_run=req.dry_run,
            forced=req.force,
        )
        if req.dry_run:
            planned = [p.record(result="planned", new_mac=p.expected_mac) for p in plans]
            return self._finish(base, result="dry-run", message="nothing was changed", interfaces=planned)
        if not info.enabled and not req.force:
            return self._finish(base, result="disabled", message="disabled by annotation", interfaces=[])
        if not req.force and wanted and wanted <= done_before:
            return self._finish(base, result="noop", message="already fixed since the last migration", interfaces=[])
        remembered = memory.recall(dom)
        loop = self._loop.run(
            dom,
            plans,
            ladders={p.alias: ladder(p.action, info.nic_refresh, remembered.get(p.alias)) for p in plans},
            expected={p.alias: self._expected(p.pod_link) for p in plans},
            resumed_at=req.resumed_at,
            trigger_time=req.trigger_time,
        )
        results = loop.interfaces
        self._remember(dom, plans, info.nic_refresh, remembered, loop.verified_at)
        result = overall_result(results)
        if result != "failed":
            with self._history_lock:
                self._fixed.setdefault(generation, set()).update(r.name for r in results)
        return self._finish(base, result=result, message=summary(results), interfaces=results)

    def _expected(self, pod_link: str | None) -> Expected:
        return UNKNOWN if pod_link is None else self._pod_address(pod_link)

    @staticmethod
    def _remember(
        dom: Domain,
        plans: list[InterfacePlan],
        refresh: NicRefresh,
        remembered: dict[str, FixupAction],
        verified_at: dict[str, FixupAction],
    ) -> None:
        """Under auto, a NIC whose MAC stays and that needed the reattach starts there next time;
        one that a link refresh brought back starts with a link refresh again."""
        if refresh != "auto":
            return
        starts = dict(remembered)
        for plan in plans:
            step = verified_at.get(plan.alias)
            if plan.action != "link-refresh" or step is None:
                continue
            if step == "reattach":
                starts[plan.alias] = step
            else:
                starts.pop(plan.alias, None)
        if starts != remembered:
            memory.remember(dom, starts, modify_flags(dom))

    @staticmethod
    def _wanted(asked: list[str] | None, known: list[str]) -> set[str]:
        """The interfaces this run is for: those asked for (each must be known), else all."""
        if asked is None:
            return set(known)
        unknown = [n for n in asked if n not in known]
        if unknown:
            raise UnknownInterfaceError(unknown, known)
        return set(asked)

    def _plan(
        self, *, domain_xml: str, vmi: Mapping[str, Any] | None, info: podinfo.PodInfo, wanted: set[str]
    ) -> list[InterfacePlan]:
        # KubeVirt's DHCP server may answer the pod link's MAC under any policy (a few files in
        # /sys/class/net: cheap). The pod annotation names the version; the flag is the fallback.
        links = self._links()
        return make_plan(
            domain_xml=domain_xml,
            vmi=vmi,
            policy=info.policy,
            macs=info.macs,
            pod_macs=pod_macs(links),
            # Multus pod links only (eth0 always has the pod network's address): which hold no IPv4.
            ipv4_less=self._ipv4_less(multus_pod_links(links)),
            family=info.kubevirt_family or self._kubevirt_family,
            only=wanted,
            refresh=info.nic_refresh,
            skip=info.skip_multus_bridges,
            recorded=info.interfaces,
        )

    def _finish(
        self, base: _RunContext, *, result: FixupResult, message: str, interfaces: list[InterfaceFixup]
    ) -> FixupRecord:
        finished = time.time()
        with self._history_lock:
            record_id = self._next_id
            self._next_id += 1
            record = FixupRecord(
                id=record_id,
                trigger=base.trigger,
                trigger_time=base.trigger_time,
                trigger_time_iso=iso(base.trigger_time),
                started=base.started,
                started_iso=iso(base.started),
                finished=finished,
                finished_iso=iso(finished),
                duration_ms=(finished - base.started) * 1000,
                event_to_done_ms=(finished - base.trigger_time) * 1000,
                domain=base.domain,
                policy=base.policy,
                dry_run=base.dry_run,
                forced=base.forced,
                result=result,
                message=message,
                interfaces=interfaces,
            )
            if not base.dry_run:
                self._history.append(record)
        log.info("fixup #%d trigger=%s result=%s %s", record.id, record.trigger, record.result, record.message)
        return record

    def _account(self, record: FixupRecord) -> None:
        m = self.metrics
        m.runs.labels(trigger=record.trigger, result=record.result).inc()
        for iface in record.interfaces:
            m.interface_fixups.labels(action=iface.action, result=iface.result).inc()
            if iface.outcome is not None:
                last = iface.steps[-1].action if iface.steps else iface.action
                m.outcomes.labels(outcome=iface.outcome, step=last).inc()
            if iface.verified_ms is not None:
                m.time_to_verified.observe(iface.verified_ms / 1000)
            reasserted = sum(s.reasserted for s in iface.steps)
            if reasserted:
                m.link_reasserted.labels().inc(reasserted)
        if record.interfaces and record.duration_ms is not None:
            m.duration.observe(record.duration_ms / 1000)
            if record.trigger in _EVENT_TRIGGERS and record.event_to_done_ms is not None:
                m.event_to_done.observe(record.event_to_done_ms / 1000)

    def restore_late(self, late: LateRemoval) -> None:
        """A NIC the guest released after a fixup gave up on it: attach it back (serialized)."""
        with self._lock:
            try:
                if self._executor.restore_late(self._domain(), late):
                    self.metrics.restores.labels(reason="late-release").inc()
            except Exception:
                log.critical("could not re-attach %s after its late release", late.alias, exc_info=True)

    def settle(self) -> None:
        """After a (re)connect: NICs a reattach left detached while libvirt was away go back."""
        if not self._executor.unsettled():
            return
        with self._lock:
            try:
                for _alias in self._executor.settle(self._domain()):
                    self.metrics.restores.labels(reason="after-reconnect").inc()
            except Exception:
                log.critical("could not settle the NICs left by an interrupted reattach", exc_info=True)

    def watched(self) -> list[str]:
        """Aliases whose original NIC the sidecar will attach again (late release, libvirt back)."""
        pending = {late.alias for late in self._executor.unsettled()}
        pending.update(late.alias for late in self._executor.removals.guarded())
        return sorted(pending)
