"""The libvirt connection: event loop thread, keepalive, reconnect with backoff.

libvirt calls our callbacks on its event-loop thread. They only record what happened and
hand it on (a queue, a condition variable); any libvirt call happens on other threads,
because calling back into libvirt from an event callback can deadlock the client.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import libvirt

from sidecar.core.domain import Domain
from sidecar.core.errors import LibvirtUnavailableError, NoDomainError
from sidecar.core.events import LifecycleEvent
from sidecar.core.removals import DeviceRemovals

log = logging.getLogger(__name__)

_event_impl_lock = threading.Lock()
_event_impl_started = False


def _ignore_libvirt_errors(_ctx: object, _err: object) -> None:
    # libvirt prints every error to stderr by default; we log the ones we care about.
    return None


def start_event_loop() -> None:
    """Register libvirt's default event implementation and run it on a daemon thread (once)."""
    global _event_impl_started  # noqa: PLW0603 - one event loop per process, by libvirt's design
    with _event_impl_lock:
        if _event_impl_started:
            return
        libvirt.registerErrorHandler(_ignore_libvirt_errors, None)
        libvirt.virEventRegisterDefaultImpl()

        def loop() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=loop, name="libvirt-events", daemon=True).start()
        _event_impl_started = True


def adopt_running_event_loop() -> None:
    """Say that this process already runs libvirt's default event loop (a host program
    embedding the watcher, e.g. a test harness); registering a second one would make two
    threads race on the same poll loop."""
    global _event_impl_started  # noqa: PLW0603
    with _event_impl_lock:
        _event_impl_started = True


class LibvirtWatcher:
    def __init__(
        self,
        *,
        uri: str,
        domain_name: str | None,
        on_lifecycle: Callable[[LifecycleEvent], None],
        removals: DeviceRemovals,
        on_connected: Callable[[], None] | None = None,
        keepalive_interval: int = 5,
        keepalive_count: int = 3,
        max_backoff: float = 10.0,
    ) -> None:
        self.uri = uri
        self.domain_name = domain_name
        self._on_lifecycle = on_lifecycle
        self._on_connected = on_connected
        self._removals = removals
        self._keepalive = (keepalive_interval, keepalive_count)
        self._max_backoff = max_backoff
        self._conn: Any = None
        self._conn_lock = threading.Lock()
        self._closed = threading.Event()
        self._stop = threading.Event()
        self._callback_ids: list[int] = []
        self._thread: threading.Thread | None = None
        self.connected_once = threading.Event()
        self.last_error: str | None = None

    # --- lifecycle of the watcher itself ---
    def start(self) -> None:
        start_event_loop()
        self._thread = threading.Thread(target=self._run, name="libvirt-connect", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._drop()

    @property
    def connected(self) -> bool:
        with self._conn_lock:
            conn = self._conn
        if conn is None:
            return False
        try:
            return bool(conn.isAlive())
        except libvirt.libvirtError:
            return False

    # --- what other threads use ---
    def connection(self) -> Any:
        with self._conn_lock:
            conn = self._conn
        if conn is None:
            raise LibvirtUnavailableError(f"not connected to libvirt at {self.uri}: {self.last_error or 'connecting'}")
        return conn

    def domain(self) -> Domain:
        """The domain we look after: --domain, else the only one on the connection."""
        conn = self.connection()
        try:
            if self.domain_name:
                try:
                    found: Domain = conn.lookupByName(self.domain_name)
                    return found
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                        raise NoDomainError(f"domain {self.domain_name!r} does not exist (yet)") from exc
                    raise
            domains = conn.listAllDomains(0)
        except libvirt.libvirtError as exc:
            raise LibvirtUnavailableError(f"libvirt call failed: {exc}") from exc
        if not domains:
            raise NoDomainError("no domain on this libvirt connection yet")
        if len(domains) > 1:
            names = ", ".join(sorted(d.name() for d in domains))
            raise NoDomainError(f"several domains ({names}); start the sidecar with --domain")
        only: Domain = domains[0]
        return only

    # --- connection loop ---
    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._connect()
            except libvirt.libvirtError as exc:
                self.last_error = str(exc)
                log.warning("libvirt at %s unavailable (%s); retrying in %.1fs", self.uri, exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            backoff = 0.5
            self.last_error = None
            log.info("connected to libvirt at %s", self.uri)
            self.connected_once.set()
            if self._on_connected is not None:
                try:
                    self._on_connected()  # on this thread, not libvirt's: it may call libvirt
                except Exception:
                    log.exception("on-connect check failed")
            # Wake up on the close callback, or poll isAlive() in case the close is missed.
            while not self._stop.is_set() and not self._closed.wait(1.0):
                if not self.connected:
                    break
            if self._stop.is_set():
                break
            self.last_error = "connection closed"
            log.warning("lost the libvirt connection; reconnecting")
            self._drop()
            self._removals.connection_lost()  # a reattach waiting for DEVICE_REMOVED stops waiting

    def _connect(self) -> None:
        conn = libvirt.open(self.uri)
        try:
            try:
                conn.setKeepAlive(*self._keepalive)
            except libvirt.libvirtError as exc:
                # Local drivers (e.g. test:///) have no keepalive; remote ones (unix socket) do.
                if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                    raise
            self._closed.clear()
            conn.registerCloseCallback(self._closed_cb, None)
            ids = [
                conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle_cb, None),
            ]
            try:
                ids.append(
                    conn.domainEventRegisterAny(
                        None, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, self._device_removed_cb, None
                    )
                )
            except libvirt.libvirtError as exc:  # the test driver may not offer it
                log.info("DEVICE_REMOVED events unavailable: %s", exc)
        except libvirt.libvirtError:
            conn.close()
            raise
        with self._conn_lock:
            self._conn = conn
            self._callback_ids = ids

    def _drop(self) -> None:
        with self._conn_lock:
            conn, self._conn = self._conn, None
            ids, self._callback_ids = self._callback_ids, []
        if conn is None:
            return
        for cid in ids:
            with contextlib.suppress(libvirt.libvirtError):
                conn.domainEventDeregisterAny(cid)
        with contextlib.suppress(libvirt.libvirtError):
            conn.unregisterCloseCallback()
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()

    # --- callbacks: event-loop thread, no libvirt calls (dom.name() is a local accessor) ---
    def _closed_cb(self, _conn: Any, reason: int, _opaque: object) -> None:
        log.info("libvirt closed the connection (reason %d)", reason)
        self._closed.set()

    def _wanted(self, dom: Any) -> str | None:
        name = str(dom.name())
        if self.domain_name and name != self.domain_name:
            return None
        return name

    def _lifecycle_cb(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: object) -> None:
        name = self._wanted(dom)
        if name is not None:
            self._on_lifecycle(LifecycleEvent(name, event, detail, time.time()))

    def _device_removed_cb(self, _conn: Any, dom: Any, alias: str, _opaque: object) -> None:
        name = self._wanted(dom)
        if name is not None:
            self._removals.removed(name, alias)
