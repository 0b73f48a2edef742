"""Injected mode's start and end, without hook calls to say either (delivery inject).

A hook sidecar hears from virt-launcher: ``Info`` when it starts, ``Shutdown`` after QEMU exited
(docs/kubevirt-facts.md H10). A container the webhook added hears nothing, so it watches:

* start: the compute container starts virtqemud after our container is already running, so we
  wait for the libvirt socket file before connecting (polled, not the connect loop's growing
  backoff, so a migration's first events are not missed by up to ten seconds);
* end: the launcher pod's ``restartPolicy`` is Never and virt-controller leaves the pod of a
  finished VMI in place (facts H3, I5), so a container that keeps running keeps the pod Running
  and its resources booked. Once libvirt has been reached, the VM counts as ended when the
  connection is gone (virt-launcher exited and took virtqemud with it), or when the domain we saw
  is gone or shut off (migrated away, shut down), for ``grace`` seconds on end; then the process
  stops like it does on ``Shutdown``, with exit code 0. Before the domain was ever seen (a
  migration target waiting for its guest) only a lost connection counts.

It must not end early either: an exited container is not Ready, and virt-controller hands a pod
to virt-handler, or a migration to its target, only when every container but compute and
istio-proxy is Ready (facts I3).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from sidecar.core.domain import DomainState

log = logging.getLogger(__name__)

SHUTOFF = DomainState.SHUTOFF
UNKNOWN = -1  # a libvirt call failed on a live connection: no conclusion either way


def socket_of(uri: str) -> Path | None:
    """The unix socket a libvirt URI names (``?socket=...``); None when it names none."""
    values = parse_qs(urlsplit(uri).query).get("socket")
    return Path(values[-1]) if values else None


def _there(path: Path, said: set[str]) -> bool:
    """Does ``path`` exist? An error other than "not there" (e.g. EACCES on a directory the
    launcher has not opened to us yet) counts as "not yet", said once: raised, it would end the
    waiting thread and leave the process alive with libvirt never reached."""
    try:
        return path.exists()
    except OSError as exc:
        if str(exc) not in said:
            said.add(str(exc))
            log.warning("cannot look for the libvirt socket %s yet: %s", path, exc)
        return False


def wait_for_socket(path: Path, stop: threading.Event, *, interval: float = 0.2) -> bool:
    """Block until ``path`` exists (True) or ``stop`` is set (False)."""
    said: set[str] = set()
    if _there(path, said):
        return True
    log.info("waiting for the libvirt socket %s (virt-launcher starts virtqemud)", path)
    while not stop.wait(interval):
        if _there(path, said):
            log.info("libvirt socket %s is there", path)
            return True
    return False


class EndWatch:
    """Decides, from repeated observations, that the VM in this pod has ended for good.

    ``connected()``: is the libvirt connection up; ``reached()``: was it ever up (the watcher's own
    record, so a connection shorter than one observation still counts); ``domain_state()``: the domain's state code,
    None when libvirt says there is no domain, ``UNKNOWN`` when it could not tell; raising nothing."""

    def __init__(
        self,
        *,
        connected: Callable[[], bool],
        reached: Callable[[], bool],
        domain_state: Callable[[], int | None],
        grace_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connected = connected
        self._reached = reached
        self._domain_state = domain_state
        self._grace = grace_s
        self._clock = clock
        self.saw_domain = False
        self._gone_since: float | None = None
        self.reason = ""

    def _gone(self) -> str | None:
        if not self._connected():
            return "the libvirt connection is gone" if self._reached() else None
        state = self._domain_state()
        if state == UNKNOWN:
            return None
        if state is not None and state != SHUTOFF:
            self.saw_domain = True
            return None
        if not self.saw_domain:
            return None  # a migration target before its guest arrives
        return "the domain is gone" if state is None else "the domain is shut off"

    def ended(self) -> bool:
        """One observation; True once the VM has been gone for ``grace`` seconds on end."""
        why = self._gone()
        now = self._clock()
        if why is None:
            self._gone_since = None
            return False
        if self._gone_since is None:
            log.info("%s; ending in %.0f s unless it comes back", why, self._grace)
            self._gone_since = now
        if now - self._gone_since >= self._grace:
            self.reason = f"{why} for {self._grace:.0f} s: the VM has ended"
            return True
        return False
