"""The one builder of the fixer, for every program that runs it.

A fixer is more than the engine: the libvirt watcher it acts through, the register of devices
awaited and guarded (`DeviceRemovals`), and the dispatcher whose worker turns lifecycle events,
late releases and reconnects into calls of the engine. Wiring them by hand in each program let
one program leave out the late-release and reconnect handling; here they come together or not
at all: a NIC the guest releases late is always attached back, and NICs an interrupted
reattach left detached are always settled after a reconnect.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge_migration_contract import AnnotationKeys, KubevirtFamily
from sidecar.core.domain import Domain
from sidecar.core.events import LifecycleEvent
from sidecar.core.removals import DeviceRemovals
from sidecar.core.verify import Expected
from sidecar.fixer import podlinks
from sidecar.fixer.dispatch import Dispatcher
from sidecar.fixer.engine import Fixer
from sidecar.fixer.executor import Executor
from sidecar.fixer.metrics import Metrics
from sidecar.fixer.podlinks import PodLink
from sidecar.fixer.settings import FixerSettings
from sidecar.fixer.watcher import LibvirtWatcher


@dataclass(frozen=True)
class FixerParts:
    """A fixer as built: the caller starts and stops the dispatcher and the watcher."""

    watcher: LibvirtWatcher
    removals: DeviceRemovals
    fixer: Fixer
    dispatcher: Dispatcher


@dataclass(frozen=True)
class Source:
    """Where the fixer reads what it needs to plan: the VMI, the pod's annotations and links."""

    vmi: Callable[[], Mapping[str, Any] | None]
    annotations_file: Path | None
    links: Callable[[], dict[str, PodLink]]
    keys: AnnotationKeys
    kubevirt_family: KubevirtFamily
    # Pod link name -> the IPv4 address the guest must hold behind it (sidecar/core/verify.py).
    pod_address: Callable[[str], Expected] = podlinks.ipv4_of


@dataclass(frozen=True)
class Engine:
    """The engine as assembled: the executor, the fixer over it, and the dispatcher feeding it."""

    executor: Executor
    fixer: Fixer
    dispatcher: Dispatcher


def assemble(
    *,
    settings: FixerSettings,
    removals: DeviceRemovals,
    domain: Callable[[], Domain],
    source: Source,
    metrics: Metrics,
    history_size: int = 100,
) -> Engine:
    """Executor, fixer and dispatcher over ``domain``, with a late release always handed to the
    dispatcher's worker. `build_fixer` puts a libvirt watcher under it; tests put a fake domain."""
    executor = Executor(settings, removals)
    fixer = Fixer(
        executor=executor,
        domain=domain,
        vmi=source.vmi,
        annotations_file=source.annotations_file,
        keys=source.keys,
        links=source.links,
        metrics=metrics,
        history_size=history_size,
        kubevirt_family=source.kubevirt_family,
        pod_address=source.pod_address,
    )
    dispatcher = Dispatcher(
        # A libvirt event's time is when the guest resumed: the hold counts from it.
        run_fixup=lambda trigger, at: fixer.run(trigger=trigger, trigger_time=at, resumed_at=at),
        incoming=fixer.incoming_migration,
        restore=fixer.restore_late,
        settle=fixer.settle,
    )
    removals.on_late = dispatcher.late_removal
    return Engine(executor=executor, fixer=fixer, dispatcher=dispatcher)


def build_fixer(
    *,
    settings: FixerSettings,
    uri: str,
    domain_name: str | None,
    source: Source,
    metrics: Metrics,
    history_size: int = 100,
    on_connected: Callable[[FixerParts], None] | None = None,
    observe: Callable[[LifecycleEvent], None] | None = None,
    max_backoff: float = 10.0,
) -> FixerParts:
    """Assemble watcher, engine and dispatcher. ``on_connected`` runs after each (re)connect, once
    the settling of interrupted reattaches is queued; ``observe`` sees each lifecycle event on
    libvirt's event thread (record only, never call libvirt there)."""
    removals = DeviceRemovals()

    # The watcher's callbacks name the dispatcher made below: they only run once it is started.
    def lifecycle(ev: LifecycleEvent) -> None:
        if observe is not None:
            observe(ev)
        dispatcher.on_lifecycle(ev)

    def connected() -> None:
        dispatcher.settle()
        if on_connected is not None:
            on_connected(parts)

    watcher = LibvirtWatcher(
        uri=uri,
        domain_name=domain_name,
        on_lifecycle=lifecycle,
        removals=removals,
        on_connected=connected,
        max_backoff=max_backoff,
    )
    engine = assemble(
        settings=settings,
        removals=removals,
        domain=watcher.domain,
        source=source,
        metrics=metrics,
        history_size=history_size,
    )
    fixer, dispatcher = engine.fixer, engine.dispatcher
    parts = FixerParts(watcher=watcher, removals=removals, fixer=fixer, dispatcher=dispatcher)
    return parts
