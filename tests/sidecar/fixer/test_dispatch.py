"""Which libvirt lifecycle events start a fixup, pre-copy and post-copy."""

from __future__ import annotations

import logging
import threading
import time
from enum import IntEnum

import libvirt
import pytest

from sidecar.core.domain import DomainState, RunningReason
from sidecar.core.errors import NoDomainError
from sidecar.core.events import EventType, LifecycleEvent, ResumedDetail, StartedDetail, SuspendedDetail
from sidecar.core.models import Trigger
from sidecar.core.removals import LateRemoval
from sidecar.core.verdicts import classify
from sidecar.fixer.dispatch import Dispatcher

STARTED_MIGRATED = (libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_STARTED_MIGRATED)
RESUMED_MIGRATED = (libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_MIGRATED)
RESUMED_POSTCOPY = (libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_POSTCOPY)


@pytest.mark.parametrize(
    ("event", "detail", "verdict"),
    [
        (*STARTED_MIGRATED, "incoming"),
        (*RESUMED_MIGRATED, "fix"),
        (*RESUMED_POSTCOPY, "postcopy-started"),
        (libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_POSTCOPY_FAILED, "postcopy-failed"),
        (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY_FAILED, "postcopy-failed"),
        (libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_UNPAUSED, "unpaused"),
        (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED, "ignore"),
        (libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_STARTED_BOOTED, "ignore"),
    ],
)
def test_events_are_classified_with_libvirts_own_numbers(event: int, detail: int, verdict: str) -> None:
    assert classify(event, detail) == verdict


@pytest.mark.parametrize(
    ("numbers", "prefix"),
    [
        (EventType, "VIR_DOMAIN_EVENT_"),
        (StartedDetail, "VIR_DOMAIN_EVENT_STARTED_"),
        (ResumedDetail, "VIR_DOMAIN_EVENT_RESUMED_"),
        (SuspendedDetail, "VIR_DOMAIN_EVENT_SUSPENDED_"),
        (DomainState, "VIR_DOMAIN_"),
        (RunningReason, "VIR_DOMAIN_RUNNING_"),
    ],
)
def test_the_sidecars_libvirt_numbers_are_libvirts_own(numbers: type[IntEnum], prefix: str) -> None:
    # sidecar/core/events.py and sidecar/core/domain.py spell them out so the core need not import libvirt.
    assert {m.name: int(m) for m in numbers} == {m.name: getattr(libvirt, prefix + m.name) for m in numbers}


class Recorder:
    def __init__(self, fail_first: bool = False) -> None:
        self.calls: list[tuple[Trigger, float]] = []
        self.incoming = 0
        self.done = threading.Semaphore(0)
        self.fail_first = fail_first

    def run(self, trigger: Trigger, at: float) -> None:
        self.calls.append((trigger, at))
        self.done.release()
        if self.fail_first and len(self.calls) == 1:
            raise NoDomainError("gone")

    def announce(self) -> None:
        self.incoming += 1


def feed(dispatcher: Dispatcher, *events: tuple[int, int]) -> None:
    for event, detail in events:
        dispatcher.on_lifecycle(LifecycleEvent("d", event, detail, time.time()))


def test_a_precopy_migration_means_one_fixup_after_the_resume() -> None:
    rec = Recorder()
    dispatcher = Dispatcher(run_fixup=rec.run, incoming=rec.announce)
    dispatcher.start()
    feed(dispatcher, STARTED_MIGRATED, RESUMED_MIGRATED)
    assert rec.done.acquire(timeout=10)
    dispatcher.stop()
    assert rec.incoming == 1
    assert [c[0] for c in rec.calls] == ["resumed-migrated"]


def test_a_postcopy_migration_is_fixed_when_it_completes_not_when_it_resumes() -> None:
    rec = Recorder()
    dispatcher = Dispatcher(run_fixup=rec.run, incoming=rec.announce)
    dispatcher.start()
    feed(dispatcher, STARTED_MIGRATED, RESUMED_POSTCOPY, RESUMED_MIGRATED)
    assert rec.done.acquire(timeout=10)
    dispatcher.stop()
    assert [c[0] for c in rec.calls] == ["postcopy-completed"]


def test_a_failing_fixup_does_not_stop_the_next_migration_from_being_handled() -> None:
    rec = Recorder(fail_first=True)
    dispatcher = Dispatcher(run_fixup=rec.run, incoming=rec.announce)
    dispatcher.start()
    feed(dispatcher, RESUMED_MIGRATED, RESUMED_MIGRATED)
    assert rec.done.acquire(timeout=10)
    assert rec.done.acquire(timeout=10)
    dispatcher.stop()
    assert len(rec.calls) == 2


def test_a_catch_up_runs_a_fixup_with_its_own_trigger() -> None:
    rec = Recorder()
    dispatcher = Dispatcher(run_fixup=rec.run, incoming=rec.announce)
    dispatcher.start()
    dispatcher.catch_up("d", time.time())
    assert rec.done.acquire(timeout=10)
    dispatcher.stop()
    assert [c[0] for c in rec.calls] == ["catch-up"]


SUSPENDED_PAUSED = (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED)
RESUMED_UNPAUSED = (libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_UNPAUSED)


def test_a_vm_migrated_paused_is_fixed_when_the_user_unpauses_it() -> None:
    # What the target sees when KubeVirt migrates a paused VMI (VIR_MIGRATE_PAUSED), seen in the lab.
    rec = Recorder()
    dispatcher = Dispatcher(run_fixup=rec.run, incoming=rec.announce)
    dispatcher.start()
    feed(dispatcher, STARTED_MIGRATED, SUSPENDED_PAUSED)
    assert not rec.done.acquire(timeout=0.5)  # paused: nothing to fix yet
    feed(dispatcher, RESUMED_UNPAUSED)
    assert rec.done.acquire(timeout=10)
    feed(dispatcher, SUSPENDED_PAUSED, RESUMED_UNPAUSED)  # a later pause in place is no arrival
    assert not rec.done.acquire(timeout=0.5)
    dispatcher.stop()
    assert [c[0] for c in rec.calls] == ["unpaused-after-migration"]


def test_a_pause_of_a_vm_that_did_not_arrive_here_is_ignored() -> None:
    rec = Recorder()
    dispatcher = Dispatcher(run_fixup=rec.run, incoming=rec.announce)
    dispatcher.start()
    feed(dispatcher, STARTED_MIGRATED, RESUMED_MIGRATED)
    assert rec.done.acquire(timeout=10)
    feed(dispatcher, SUSPENDED_PAUSED, RESUMED_UNPAUSED)
    assert not rec.done.acquire(timeout=0.5)
    dispatcher.stop()
    assert [c[0] for c in rec.calls] == ["resumed-migrated"]


def test_a_domain_found_paused_after_a_reconnect_is_fixed_at_its_unpause() -> None:
    rec = Recorder()
    dispatcher = Dispatcher(run_fixup=rec.run, incoming=rec.announce)
    dispatcher.start()
    dispatcher.await_resume("d")
    feed(dispatcher, RESUMED_UNPAUSED)
    assert rec.done.acquire(timeout=10)
    dispatcher.stop()
    assert [c[0] for c in rec.calls] == ["unpaused-after-migration"]


# --- found by mutation testing (docs/testing.md, "Mutation testing") --------------------------------
# Each test drains the worker with stop(): it handles the queue in order, so everything fed before
# stop() has been handled when stop() returns.

SUSPENDED_POSTCOPY_FAILED = (
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED,
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY_FAILED,
)


def at(dispatcher: Dispatcher, domain: str, event: tuple[int, int], when: float) -> None:
    dispatcher.on_lifecycle(LifecycleEvent(domain, *event, when))


def test_each_fixup_gets_the_time_of_the_event_that_started_it() -> None:
    rec = Recorder()
    dispatcher = Dispatcher(run_fixup=rec.run, incoming=rec.announce)
    dispatcher.start()
    at(dispatcher, "d", RESUMED_MIGRATED, 1000.0)
    dispatcher.catch_up("d", 2000.0)
    at(dispatcher, "d", STARTED_MIGRATED, 3000.0)
    at(dispatcher, "d", SUSPENDED_PAUSED, 3001.0)
    at(dispatcher, "d", RESUMED_UNPAUSED, 3002.0)
    dispatcher.stop()
    assert rec.calls == [("resumed-migrated", 1000.0), ("catch-up", 2000.0), ("unpaused-after-migration", 3002.0)]


def test_only_an_incoming_migration_is_announced() -> None:
    rec = Recorder()
    dispatcher = Dispatcher(run_fixup=rec.run, incoming=rec.announce)
    feed(dispatcher, SUSPENDED_PAUSED, RESUMED_UNPAUSED, RESUMED_POSTCOPY, RESUMED_MIGRATED, STARTED_MIGRATED)
    assert rec.incoming == 1


def test_after_a_failed_post_copy_the_next_migration_is_a_plain_one() -> None:
    rec = Recorder()
    dispatcher = Dispatcher(run_fixup=rec.run, incoming=rec.announce)
    dispatcher.start()
    feed(dispatcher, STARTED_MIGRATED, RESUMED_POSTCOPY, SUSPENDED_POSTCOPY_FAILED)
    feed(dispatcher, STARTED_MIGRATED, RESUMED_MIGRATED)
    dispatcher.stop()
    assert [c[0] for c in rec.calls] == ["resumed-migrated"]


def test_after_a_completed_post_copy_the_next_migration_is_a_plain_one() -> None:
    rec = Recorder()
    dispatcher = Dispatcher(run_fixup=rec.run, incoming=rec.announce)
    dispatcher.start()
    feed(dispatcher, STARTED_MIGRATED, RESUMED_POSTCOPY, RESUMED_MIGRATED, STARTED_MIGRATED, RESUMED_MIGRATED)
    dispatcher.stop()
    assert [c[0] for c in rec.calls] == ["postcopy-completed", "resumed-migrated"]


def test_a_late_nic_removal_and_a_libvirt_reconnect_are_handled_and_migrations_still_are_after_them() -> None:
    rec = Recorder()
    restored: list[LateRemoval] = []
    settled: list[bool] = []
    dispatcher = Dispatcher(
        run_fixup=rec.run, incoming=rec.announce, restore=restored.append, settle=lambda: settled.append(True)
    )
    dispatcher.start()
    late = LateRemoval(domain="d", alias="ua-default", xml="<interface/>", flags=0)
    dispatcher.late_removal(late)
    dispatcher.settle()
    dispatcher.await_resume("d")
    feed(dispatcher, RESUMED_MIGRATED)
    dispatcher.stop()
    assert restored == [late] and settled == [True]
    assert [c[0] for c in rec.calls] == ["resumed-migrated"]


def test_without_restore_or_settle_handlers_those_requests_are_dropped_and_work_goes_on() -> None:
    rec = Recorder()
    dispatcher = Dispatcher(run_fixup=rec.run, incoming=rec.announce)
    dispatcher.start()
    dispatcher.late_removal(LateRemoval(domain="d", alias="ua-default", xml="<interface/>", flags=0))
    dispatcher.settle()
    feed(dispatcher, RESUMED_MIGRATED)
    dispatcher.stop()
    assert [c[0] for c in rec.calls] == ["resumed-migrated"]


def test_the_sidecar_log_says_what_happened_to_which_domain(caplog: pytest.LogCaptureFixture) -> None:
    """What an admin reads in `kubectl logs` when a migration went wrong."""

    def crash(trigger: Trigger, at: float) -> None:
        raise RuntimeError("boom")

    caplog.set_level(logging.INFO, logger="sidecar.fixer.dispatch")
    dispatcher = Dispatcher(run_fixup=crash, incoming=lambda: None)
    dispatcher.start()
    at(dispatcher, "default_web-1", STARTED_MIGRATED, 1.0)
    at(dispatcher, "default_web-1", RESUMED_POSTCOPY, 2.0)
    at(dispatcher, "default_web-1", SUSPENDED_POSTCOPY_FAILED, 3.0)
    at(dispatcher, "default_web-2", STARTED_MIGRATED, 4.0)
    at(dispatcher, "default_web-2", SUSPENDED_PAUSED, 5.0)
    at(dispatcher, "default_web-2", RESUMED_UNPAUSED, 6.0)
    dispatcher.catch_up("default_web-3", 7.0)
    dispatcher.stop()
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "sidecar.fixer.dispatch"]
    assert said == [
        ("INFO", "incoming migration of default_web-1 announced"),
        ("INFO", "default_web-1 resumed in post-copy; fixing up once the migration completes"),
        ("ERROR", "post-copy migration of default_web-1 failed; NICs left alone"),
        ("INFO", "incoming migration of default_web-2 announced"),
        ("INFO", "default_web-2 arrived paused and is unpaused now: fixing up"),
        ("ERROR", "automatic fixup of default_web-2 crashed"),
        ("ERROR", "automatic fixup of default_web-3 crashed"),
    ]


def test_a_fixup_that_cannot_reach_the_domain_is_logged_with_the_reason(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder(fail_first=True)
    dispatcher = Dispatcher(run_fixup=rec.run, incoming=rec.announce)
    dispatcher.start()
    at(dispatcher, "default_web-1", RESUMED_MIGRATED, 1.0)
    dispatcher.stop()
    errors = [r.getMessage() for r in caplog.records if r.name == "sidecar.fixer.dispatch" and r.levelname == "ERROR"]
    assert errors == ["automatic fixup of default_web-1 impossible: gone"]
