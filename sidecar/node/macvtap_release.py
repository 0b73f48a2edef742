"""Releasing a migrated VM's macvtap on the SOURCE node (issue 27, KubeVirt issue 5912).

With the macvtap binding, each launcher pod holds a bridge-mode macvtap carrying the VM's pinned
MAC (docs/kubevirt-facts.md V2, V3, V6). Once the VM has migrated away, the source pod lives on for
seconds to about 46 s (V8), and while its macvtap is up the kernel's macvlan bridge mode hands
every frame a neighbour on the same lower device sends to that MAC to the stale device instead of
the uplink (V7): the neighbour cannot reach the VM. A link that is down is out of the macvlan
port's MAC table, so setting the stale macvtap down is enough to send those frames out again.

Nothing in the launcher pod can do it (its containers run as uid 107 with every capability
dropped), and KubeVirt calls no node hook on the source, so the node agent watches: every launcher
pod's virtqemud on this node, for a domain that stopped because it migrated away
(STOPPED/MIGRATED). Then each `<interface type='ethernet'>` target of that domain that is a macvtap
in the pod's network namespace is set down (sidecar/node/netns.py says what that takes).

Off unless `--release-stale-macvtap`. Errors are logged and the watch goes on; nothing raises out.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import socket
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Protocol

from sidecar.core.domxml import parse_interfaces
from sidecar.core.events import EventType, LifecycleEvent
from sidecar.core.removals import DeviceRemovals
from sidecar.fixer.watcher import LibvirtWatcher
from sidecar.node.fixup import reachable_socket
from sidecar.node.netns import IFF_UP, link_driver, link_flags, peer_pid, run_in_netns, set_link_flags
from sidecar.node.settings import NodeAgentSettings
from sidecar.node.target import SOCKET_IN_POD

log = logging.getLogger(__name__)

# virDomainEventStoppedDetailType VIR_DOMAIN_EVENT_STOPPED_MIGRATED: the domain left for another
# host (libvirt's ABI; the tests compare it with libvirt-python's constant).
STOPPED_MIGRATED: Final = 3
# Events after which a domain's interfaces may differ from what we know.
_REFRESH_ON: Final = frozenset({EventType.DEFINED, EventType.STARTED, EventType.RESUMED})
SCAN_INTERVAL_S: Final = 2.0
# ethtool's driver name for macvlan links, macvtaps included (they share the macvlan driver).
MACVLAN_DRIVER: Final = "macvlan"

ReleaseOutcome = Literal["released", "already-down", "not-macvtap", "missing", "error"]


@dataclass(frozen=True)
class ReleaseResult:
    """What the release did to one target dev of a domain that migrated away."""

    device: str
    outcome: ReleaseOutcome
    detail: str
    at: float | None = None  # epoch seconds when the link was seen down

    @property
    def released(self) -> bool:
        """The device no longer claims its MAC on the lower device."""
        return self.outcome in ("released", "already-down")


def _release_one(sock: socket.socket, device: str) -> ReleaseResult:
    try:
        driver = link_driver(sock, device)
        if driver != MACVLAN_DRIVER:
            return ReleaseResult(device, "not-macvtap", f"driver {driver!r}: left as it is")
        flags = link_flags(sock, device)
        if not flags & IFF_UP:
            return ReleaseResult(device, "already-down", "the link was down already", time.time())
        set_link_flags(sock, device, flags & ~IFF_UP)
        return ReleaseResult(device, "released", "link set down", time.time())
    except OSError as exc:
        if exc.errno == errno.ENODEV:
            return ReleaseResult(device, "missing", "no such link in the pod's network namespace")
        return ReleaseResult(device, "error", f"{type(exc).__name__}: {exc}")
    except ValueError as exc:
        return ReleaseResult(device, "error", str(exc))


def release_macvtaps(pid: int, devices: Sequence[str]) -> list[ReleaseResult]:
    """Set down each of ``devices`` that is a macvtap (or macvlan) in the network namespace of
    ``pid``; any other link is left as it is. One result per device, in order; never raises (a
    namespace that cannot be entered is an error for every device)."""
    if not devices:
        return []

    def work() -> list[ReleaseResult]:  # in the pod's namespace: the socket is created there
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            return [_release_one(sock, device) for device in devices]

    try:
        return run_in_netns(pid, work)
    except Exception as exc:
        return [ReleaseResult(d, "error", f"network namespace of pid {pid}: {exc}") for d in devices]


def release_behind(address: str, devices: Sequence[str]) -> list[ReleaseResult]:
    """`release_macvtaps` in the pod of the process serving the unix socket ``address`` (a
    launcher's virtqemud, which runs in its pod's network namespace). The pid is asked at each
    release, so a pid read long ago can never name another process."""
    if not devices:
        return []
    try:
        pid = peer_pid(address)
    except OSError as exc:
        return [ReleaseResult(d, "error", f"who serves {address}: {exc}") for d in devices]
    return release_macvtaps(pid, devices)


def ethernet_targets(domain_xml: str) -> tuple[str, ...]:
    """The target devs of the domain's `<interface type='ethernet'>`: where KubeVirt's tap-type
    bindings, macvtap among them, name the pod's link (facts V2)."""
    return tuple(i.target_dev for i in parse_interfaces(domain_xml) if i.type == "ethernet" and i.target_dev)


def launcher_sockets(pods_dir: Path, uid: int) -> dict[str, Path]:
    """Pod UID -> virtqemud socket of each launcher pod under the kubelet's ``pods_dir``.

    Only a socket itself (lstat: a symlink there is refused, not followed) owned by ``uid``, the
    launcher's user: a pod cannot point the agent at a socket it does not own."""
    found: dict[str, Path] = {}
    try:
        entries = list(os.scandir(pods_dir))
    except OSError as exc:
        log.debug("cannot list %s: %s", pods_dir, exc)
        return found
    for entry in entries:
        path = Path(entry.path) / SOCKET_IN_POD
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISSOCK(st.st_mode) and st.st_uid == uid:
            found[entry.name] = path
        else:
            log.debug("%s: not a socket owned by uid %d; ignored", path, uid)
    return found


class Connection(Protocol):
    """A launcher's libvirt connection as the watch uses it (LibvirtWatcher; a fake in tests)."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def connection(self) -> Any: ...


# (uri, on_lifecycle on libvirt's event thread, on_connected after each (re)connect) -> connection
Connect = Callable[[str, Callable[[LifecycleEvent], None], Callable[[], None]], Connection]
# (socket address, target devs) -> one result per device; never raises
Release = Callable[[str, Sequence[str]], list[ReleaseResult]]


def libvirt_connection(
    uri: str, on_lifecycle: Callable[[LifecycleEvent], None], on_connected: Callable[[], None]
) -> Connection:
    """The product's libvirt watcher (its event-loop thread, keepalive and reconnects) on every
    domain of the connection; no device removal is awaited here."""
    return LibvirtWatcher(
        uri=uri, domain_name=None, on_lifecycle=on_lifecycle, removals=DeviceRemovals(), on_connected=on_connected
    )


def _report(ev: LifecycleEvent, pod_uid: str, result: ReleaseResult) -> None:
    where = f"{result.device} of domain {ev.domain} (pod {pod_uid})"
    if result.released and result.at is not None:
        took = (result.at - ev.at) * 1000
        log.info("stale macvtap %s released: %s, %.0f ms after STOPPED/MIGRATED", where, result.detail, took)
    elif result.outcome == "not-macvtap":  # e.g. the tap of a bridge binding
        log.debug("%s is not a macvtap: %s", where, result.detail)
    elif result.outcome == "missing":
        log.info("%s: %s", where, result.detail)
    else:
        log.warning("stale macvtap %s not released: %s", where, result.detail)


_ALL: Final = "all"  # the worker's order to read every domain again (after a (re)connect)


class LauncherWatch:
    """One launcher pod: its libvirt connection, the ethernet targets of its domains, and a worker
    thread for every libvirt call and release (libvirt's event thread only queues the events)."""

    def __init__(self, pod_uid: str, socket_path: Path, *, uri_template: str, connect: Connect, release: Release):
        self.pod_uid = pod_uid
        self._release = release
        self._targets: dict[str, tuple[str, ...]] = {}
        self._queue: queue.SimpleQueue[LifecycleEvent | str | None] = queue.SimpleQueue()
        self._resources = contextlib.ExitStack()
        # The kubelet's path is longer than a socket address holds: reached through a directory
        # descriptor held while the watch lives (as the fixup does).
        self.address = self._resources.enter_context(reachable_socket(socket_path))
        try:
            self._conn = connect(uri_template.format(socket=self.address), self._on_event, self._on_connected)
        except BaseException:
            self._resources.close()
            raise
        self._worker = threading.Thread(target=self._work, name=f"macvtap-{pod_uid[:8]}", daemon=True)

    def start(self) -> None:
        self._worker.start()
        self._conn.start()

    def stop(self) -> None:
        self._conn.stop()
        self._queue.put(None)
        self._worker.join(5)
        self._resources.close()

    def _on_connected(self) -> None:
        self._queue.put(_ALL)

    def _on_event(self, ev: LifecycleEvent) -> None:  # libvirt's event thread: queue only
        migrated_away = ev.event == EventType.STOPPED and ev.detail == STOPPED_MIGRATED
        if migrated_away or ev.event in _REFRESH_ON or ev.event == EventType.UNDEFINED:
            self._queue.put(ev)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                if isinstance(item, str):
                    self._refresh_all()
                elif item.event == EventType.STOPPED:
                    self._release_domain(item)
                elif item.event == EventType.UNDEFINED:
                    self._targets.pop(item.domain, None)
                else:
                    self._refresh(item.domain)
            except Exception:  # a bug here must not end the watch of this pod
                log.exception("macvtap release watch of pod %s", self.pod_uid)

    def _refresh_all(self) -> None:
        try:
            domains = self._conn.connection().listAllDomains(0)
        except Exception as exc:
            log.warning("pod %s: cannot list its domains: %s", self.pod_uid, exc)
            return
        known: dict[str, tuple[str, ...]] = {}
        for dom in domains:
            try:
                known[str(dom.name())] = ethernet_targets(dom.XMLDesc(0))
            except Exception as exc:
                log.warning("pod %s: cannot read a domain's XML: %s", self.pod_uid, exc)
        self._targets = known

    def _refresh(self, domain: str) -> None:
        try:
            xml = self._conn.connection().lookupByName(domain).XMLDesc(0)
        except Exception as exc:
            log.warning("pod %s: cannot read the XML of domain %s: %s", self.pod_uid, domain, exc)
            return
        self._targets[domain] = ethernet_targets(xml)

    def _release_domain(self, ev: LifecycleEvent) -> None:
        devices = self._targets.pop(ev.domain, None)
        if devices is None:
            log.warning("domain %s of pod %s migrated away before its interfaces were read", ev.domain, self.pod_uid)
            return
        if not devices:
            log.debug("domain %s of pod %s migrated away; it has no ethernet interface", ev.domain, self.pod_uid)
            return
        for result in self._release(self.address, devices):
            _report(ev, self.pod_uid, result)


class MacvtapReleaser:
    """Watches every launcher pod of this node for a domain that migrated away, and releases its
    macvtaps. The kubelet's pods directory is scanned every 2 s: a new launcher gets a watch, the
    watch of one that is gone is closed."""

    def __init__(
        self,
        settings: NodeAgentSettings,
        *,
        connect: Connect = libvirt_connection,
        release: Release = release_behind,
        interval: float = SCAN_INTERVAL_S,
    ) -> None:
        self._settings = settings
        self._connect = connect
        self._release = release
        self._interval = interval
        self._watches: dict[str, LauncherWatch] = {}
        self._refused: set[str] = set()  # pods whose watch could not be set up (said once)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def watched(self) -> list[str]:
        return sorted(self._watches)

    def start(self) -> None:
        log.info(
            "releasing stale macvtaps: launchers under %s whose virtqemud socket is uid %d's",
            self._settings.kubelet_pods_dir,
            self._settings.launcher_uid,
        )
        self._thread = threading.Thread(target=self._loop, name="macvtap-release-scan", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        while self._watches:
            self._watches.popitem()[1].stop()

    def _loop(self) -> None:
        while True:
            try:
                self.scan_once()
            except Exception:  # the scan goes on whatever one pass met
                log.exception("scan for launcher pods under %s", self._settings.kubelet_pods_dir)
            if self._stop.wait(self._interval):
                return

    def scan_once(self) -> None:
        found = launcher_sockets(self._settings.kubelet_pods_dir, self._settings.launcher_uid)
        self._refused &= set(found)
        for pod_uid in [uid for uid in self._watches if uid not in found]:
            log.info("launcher pod %s is gone: its watch is closed", pod_uid)
            # A virtqemud that accepted and never answered can hold a stop for seconds: not here.
            threading.Thread(target=self._watches.pop(pod_uid).stop, name="macvtap-unwatch", daemon=True).start()
        for pod_uid, path in found.items():
            if pod_uid in self._watches or pod_uid in self._refused:
                continue
            try:
                watch = LauncherWatch(
                    pod_uid,
                    path,
                    uri_template=self._settings.libvirt_uri_template,
                    connect=self._connect,
                    release=self._release,
                )
            except Exception as exc:
                log.warning("launcher pod %s cannot be watched: %s", pod_uid, exc)
                self._refused.add(pod_uid)
                continue
            watch.start()
            self._watches[pod_uid] = watch
            log.info("watching launcher pod %s for domains that migrate away", pod_uid)
