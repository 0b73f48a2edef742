"""The running sidecar: watcher, dispatcher, fixer and hook server wired together.

Also builds the status view (domain, NICs, pod links, last fixup) for REST.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import libvirt

from bridge_migration_contract import DOMAIN_ALIAS_PREFIX
from sidecar import podinfo
from sidecar.config import ServeSettings
from sidecar.domxml import parse_interfaces
from sidecar.endwatch import UNKNOWN, EndWatch, socket_of, wait_for_socket
from sidecar.engine import Fixer
from sidecar.errors import LibvirtUnavailableError, NoDomainError
from sidecar.executor import DeviceRemovals, Executor, ExecutorSettings
from sidecar.metrics import Metrics
from sidecar.models import Health, InterfaceStatus, Status
from sidecar.plan import targets_from_vmi
from sidecar.podlinks import read_links
from sidecar.triggers import Dispatcher
from sidecar.vmistore import VmiStore
from sidecar.watcher import LibvirtWatcher

if TYPE_CHECKING:
    from sidecar.hooks import HookServer

log = logging.getLogger(__name__)

_STATE_NAMES = {
    0: "nostate",
    1: "running",
    2: "blocked",
    3: "paused",
    4: "shutdown",
    5: "shutoff",
    6: "crashed",
    7: "pmsuspended",
}


class Sidecar:
    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.shutdown_requested = threading.Event()
        self.shutdown_reason = "Shutdown called through the hook"
        self._stopping = threading.Event()
        self._end_watch: threading.Thread | None = None
        self.vmis = VmiStore()
        self.removals = DeviceRemovals()
        self.metrics = Metrics()
        self.watcher = LibvirtWatcher(
            uri=settings.libvirt_uri,
            domain_name=settings.domain,
            on_lifecycle=self._on_lifecycle,
            removals=self.removals,
            on_connected=self._check_missed_migration,
        )
        self.fixer = Fixer(
            executor=Executor(
                ExecutorSettings(link_pause_s=settings.link_pause_ms / 1000, detach_timeout_s=settings.detach_timeout),
                self.removals,
            ),
            domain=self.domain,
            vmi=self.vmis.get,
            annotations_file=settings.pod_annotations,
            keys=settings.keys,
            links=read_links,
            metrics=self.metrics,
            history_size=settings.history_size,
            kubevirt_family=settings.kubevirt_family,
        )
        self.dispatcher = Dispatcher(
            run_fixup=lambda trigger, at: self.fixer.run(trigger=trigger, trigger_time=at),
            incoming=self.fixer.incoming_migration,
            restore=self.fixer.restore_late,
            settle=self.fixer.settle,
        )
        self.removals.on_late = self.dispatcher.late_removal
        self.hooks: HookServer | None = None

    def _on_lifecycle(self, ev: Any) -> None:
        self.dispatcher.on_lifecycle(ev)

    def _check_missed_migration(self) -> None:
        """After (re)connecting: first NICs an interrupted reattach left detached go back (on
        the worker, before anything else queued); then a domain running here *because of* a
        migration whose end we may have missed (libvirt or this process restarted) gets a
        catch-up fixup. The fixer's idempotency turns it into a no-op when this arrival was
        already handled."""
        self.dispatcher.settle()
        try:
            dom = self.domain()
            state, reason = dom.state()
        except (NoDomainError, LibvirtUnavailableError, libvirt.libvirtError):
            return
        # RUNNING/POSTCOPY is left out on purpose: RESUMED/MIGRATED will still come then.
        if state == libvirt.VIR_DOMAIN_RUNNING and reason == libvirt.VIR_DOMAIN_RUNNING_MIGRATED:
            log.info("domain %s runs here after a migration: catching up", dom.name())
            self.dispatcher.catch_up(str(dom.name()), time.time())
        elif state == libvirt.VIR_DOMAIN_PAUSED:
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
            from sidecar.hooks import HookServer  # grpc only when there is a hook directory

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
        grace = self.settings.detach_timeout + 10
        self.dispatcher.stop(timeout=grace)
        if not self.fixer.wait_idle(grace):
            log.error("stopping while a fixup is still running")
        if self.hooks is not None:
            self.hooks.stop()
        self.watcher.stop()

    def domain(self) -> Any:
        return self.watcher.domain()

    # --- views for REST ---
    def health(self) -> Health:
        connected = self.watcher.connected
        registered = self.vmis.registered.is_set()
        hook_on = self.hooks is not None and self.hooks.enabled
        # Health (the status code) is about the job the sidecar does: it needs libvirt. The
        # hook registration only happens when virt-launcher starts, so it is reported, not required.
        ready = connected and (registered or not hook_on)
        problems = []
        if not connected:
            problems.append(f"libvirt not connected ({self.watcher.last_error or 'connecting'})")
        if hook_on and not registered:
            problems.append("virt-launcher has not called Info on the hook socket yet")
        return Health(
            ok=connected,
            ready=ready,
            libvirt_connected=connected,
            hook_registered=registered,
            hook_server_enabled=hook_on,
            detail="; ".join(problems) or "ok",
        )

    def status(self) -> Status:
        vmi = self.vmis.get()
        info = podinfo.load(self.settings.pod_annotations, vmi=vmi, keys=self.settings.keys)
        connected = self.watcher.connected
        name: str | None = None
        state: str | None = None
        interfaces: list[InterfaceStatus] = []
        try:
            dom = self.domain()
            name = str(dom.name())
            code, _reason = dom.state()
            state = _STATE_NAMES.get(code, str(code))
            xml = dom.XMLDesc(0)
        except (NoDomainError, LibvirtUnavailableError, libvirt.libvirtError):
            xml = None
        if xml is not None:
            links = read_links()
            targets = {t.name: t for t in targets_from_vmi(vmi, xml, links)}
            for iface in parse_interfaces(xml):
                vmi_name = (
                    iface.alias.removeprefix(DOMAIN_ALIAS_PREFIX)
                    if iface.alias and iface.alias.startswith(DOMAIN_ALIAS_PREFIX)
                    else None
                )
                target = targets.get(vmi_name) if vmi_name else None
                pod_link = target.pod_link if target else None
                link = links.get(pod_link) if pod_link else None
                interfaces.append(
                    InterfaceStatus(
                        name=vmi_name,
                        alias=iface.alias,
                        type=iface.type,
                        mac=iface.mac,
                        link_state=iface.link_state,
                        target_dev=iface.target_dev,
                        managed=target is not None,
                        pod_link=pod_link,
                        pod_link_mac=link.mac if link else None,
                        pod_link_state=link.operstate if link else None,
                    )
                )
        return Status(
            domain=name,
            domain_state=state,
            libvirt_connected=connected,
            libvirt_uri=self.settings.libvirt_uri,
            hook_registered=self.vmis.registered.is_set(),
            vmi_known=vmi is not None,
            policy=info.policy,
            enabled=info.enabled,
            interfaces=interfaces,
            restore_pending=self.fixer.watched(),
            last_fixup=self.fixer.last(),
        )
