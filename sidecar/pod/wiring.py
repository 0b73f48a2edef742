"""The running sidecar: watcher, dispatcher, fixer and hook server wired together.

What REST shows of it is built in sidecar/pod/rest_views.py.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

import libvirt

from sidecar.core.domain import Domain, DomainState, RunningReason
from sidecar.core.errors import LibvirtUnavailableError, NoDomainError
from sidecar.core.vmistore import VmiStore
from sidecar.fixer.build import Source, build_fixer
from sidecar.fixer.metrics import Metrics
from sidecar.fixer.podlinks import read_links
from sidecar.pod.endwatch import UNKNOWN, EndWatch, socket_of, wait_for_socket
from sidecar.pod.settings import ServeSettings

if TYPE_CHECKING:
    from sidecar.pod.hook_server import HookServer

log = logging.getLogger(__name__)


class Sidecar:
    # What a libvirt call raises when it fails: REST answers 503 for it (sidecar/pod/rest.py).
    libvirt_errors: tuple[type[Exception], ...] = (libvirt.libvirtError,)

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.shutdown_requested = threading.Event()
        self.shutdown_reason = "Shutdown called through the hook"
        self._stopping = threading.Event()
        self._end_watch: threading.Thread | None = None
        self.vmis = VmiStore()
        self.metrics = Metrics()
        parts = build_fixer(
            settings=settings.fixer,
            uri=settings.libvirt_uri,
            domain_name=settings.domain,
            source=Source(
                vmi=self.vmis.get,
                annotations_file=settings.pod_annotations,
                links=read_links,
                keys=settings.keys,
                kubevirt_family=settings.kubevirt_family,
            ),
            metrics=self.metrics,
            history_size=settings.history_size,
            on_connected=lambda _parts: self._check_missed_migration(),
        )
        self.watcher = parts.watcher
        self.removals = parts.removals
        self.fixer = parts.fixer
        self.dispatcher = parts.dispatcher
        self.hooks: HookServer | None = None

    def _check_missed_migration(self) -> None:
        """After (re)connecting, once the builder has queued the settling of NICs an interrupted
        reattach left detached: a domain running here *because of* a migration whose end we may
        have missed (libvirt or this process restarted) gets a catch-up fixup. The fixer's
        idempotency turns it into a no-op when this arrival was already handled."""
        try:
            dom = self.domain()
            state, reason = dom.state()
        except (NoDomainError, LibvirtUnavailableError, libvirt.libvirtError):
            return
        # RUNNING/POSTCOPY is left out on purpose: RESUMED/MIGRATED will still come then.
        if state == DomainState.RUNNING and reason == RunningReason.MIGRATED:
            log.info("domain %s runs here after a migration: catching up", dom.name())
            self.dispatcher.catch_up(str(dom.name()), time.time())
        elif state == DomainState.PAUSED:
            # It may have arrived paused (KubeVirt migrates a paused VMI paused); libvirt cannot
            # tell that from a pause in place, so the next unpause gets a fixup either way.
            log.info("domain %s is paused: its next unpause gets a fixup", dom.name())
            self.dispatcher.await_resume(str(dom.name()))

    def start(self) -> None:
        self.dispatcher.start()
        if self.settings.delivery == "inject":
            log.info("delivery inject: no hook server; the process ends itself once the VM has ended")
            self._end_watch = threading.Thread(target=self._run_injected, name="end-watch", daemon=True)
            self._end_watch.start()
            return
        self.watcher.start()
        if self.settings.hook_socket_dir.is_dir():
            from sidecar.pod.hook_server import HookServer  # grpc only when there is a hook directory

            self.hooks = HookServer(
                directory=self.settings.hook_socket_dir, store=self.vmis, on_shutdown=self.shutdown_requested.set
            )
            self.hooks.start()
        else:
            log.info("hook directory %s does not exist: hook server off", self.settings.hook_socket_dir)

    def _domain_state(self) -> int | None:
        try:
            return int(self.domain().state()[0])
        except NoDomainError:
            return None
        except (LibvirtUnavailableError, libvirt.libvirtError):
            return UNKNOWN

    def _run_injected(self, interval: float = 1.0) -> None:
        """Inject mode: wait for virtqemud's socket, watch libvirt, end when the VM has ended."""
        socket = socket_of(self.settings.libvirt_uri)
        if socket is not None:
            self.watcher.last_error = f"waiting for {socket} to appear"
            if not wait_for_socket(socket, self._stopping):
                return
        self.watcher.start()
        watch = EndWatch(
            connected=lambda: self.watcher.connected,
            reached=self.watcher.connected_once.is_set,
            domain_state=self._domain_state,
            grace_s=self.settings.end_grace,
        )
        while not self._stopping.wait(interval):
            if watch.ended():
                self.shutdown_reason = watch.reason
                self.shutdown_requested.set()
                return

    def stop(self) -> None:
        self._stopping.set()
        # A reattach cut short would leave the guest without its NIC: let a running fixup
        # finish before libvirt goes away under it (the worker first, then REST-started ones).
        grace = self.settings.fixer.detach_timeout_s + 10
        self.dispatcher.stop(timeout=grace)
        if not self.fixer.wait_idle(grace):
            log.error("stopping while a fixup is still running")
        if self.hooks is not None:
            self.hooks.stop()
        self.watcher.stop()

    def domain(self) -> Domain:
        return self.watcher.domain()
