"""The node agent's I/O half: reach a target pod's libvirt and run one fixup there.

The fixer is built as every program builds it (sidecar/fixer/build.py), on a connection that
lives as long as the call, or, for a domain that arrived paused, until it is unpaused or its
pod is gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from sidecar.core.domain import DomainState
from sidecar.core.errors import DomainNotRunningError, LibvirtUnavailableError
from sidecar.core.events import EventType, LifecycleEvent, ResumedDetail
from sidecar.core.models import FixupRecord
from sidecar.core.verify import CHANGED, UNKNOWN, Expected
from sidecar.fixer.build import FixerParts, Source, build_fixer
from sidecar.fixer.engine import Fixer
from sidecar.fixer.metrics import Metrics
from sidecar.node.settings import NodeAgentSettings
from sidecar.node.target import TargetPod

log = logging.getLogger(__name__)


def address_from_outside(pod_link: str) -> Expected:
    """The agent runs outside the launcher pod's network namespace and cannot read its links: on the
    pod network (``eth0``) the guest must hold a new address; a Multus NIC stays unverified."""
    return CHANGED if pod_link == "eth0" else UNKNOWN


# sun_path holds 108 bytes with the terminating NUL.
MAX_SOCKET_PATH: Final = 107
CONNECT_MARGIN_S: Final = 0.5
PAUSED_POLL_S: Final = 5.0  # how often a paused domain's watch checks that its pod still exists


@contextlib.contextmanager
def reachable_socket(path: Path) -> Iterator[str]:
    """A path to ``path`` that fits a socket address. Under /var/lib/kubelet/pods the launcher's
    socket is 121 characters long, more than sun_path holds (facts P8): it is then reached through
    an open descriptor of its directory, /proc/self/fd/<n>/<name>, held for the connection."""
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def fix_target(
    target: TargetPod,
    vmi: Mapping[str, Any],
    settings: NodeAgentSettings,
    *,
    deadline: float,
    resumed_at: float,
    only: list[str] | None = None,
) -> FixupRecord:
    """Connect to the target pod's libvirt, run one fixup with the sidecar's engine, disconnect.

    The engine runs as in the sidecar, with what the node has instead of the pod's: the VMI's own
    annotations (our `macs`, `mac-policy`, `nic-refresh` keys; virt-controller copies them to the
    pod, so they are the same) and no pod links. That is enough from KubeVirt v1.9 on, whose DHCP
    server answers the spec MAC, else the VMI status MAC (facts D2), never the pod link's; the
    Plugin API exists only from v1.9 (P1), so the v1.9 rule is the fallback. ``resumed_at`` is when
    the guest resumed here, as well as the call tells it (`TargetPod.resumed_at`)."""
    resources = contextlib.ExitStack()
    unpaused = threading.Event()
    parts = _open(target, vmi, settings, resources=resources, unpaused=unpaused)
    handed_over = False
    try:
        # Retried until just before the call's deadline, so that a launcher that cannot be
        # reached is reported as such in the answer rather than as "still running".
        if not parts.watcher.connected_once.wait(max(0.1, deadline - CONNECT_MARGIN_S - time.monotonic())):
            why = parts.watcher.last_error or "no answer"
            raise LibvirtUnavailableError(f"cannot reach libvirt at {target.socket}: {why}")
        try:
            return parts.fixer.run(trigger="node-hook", resumed_at=resumed_at, interfaces=only)
        except DomainNotRunningError:
            if parts.watcher.domain().state()[0] != DomainState.PAUSED:
                raise
        # KubeVirt migrates a paused VMI paused: the guest runs again only when the user
        # unpauses it, and no node hook says when. Keep this connection and fix it then.
        threading.Thread(
            target=_fix_on_unpause,
            args=(target, parts.fixer, unpaused, resources, only),
            name=f"paused-{target.domain}",
            daemon=True,
        ).start()
        handed_over = True
        raise DeferredFixupError(f"domain {target.domain} arrived paused: its NICs are fixed when it is unpaused")
    finally:
        if not handed_over:
            resources.close()


def _open(
    target: TargetPod,
    vmi: Mapping[str, Any],
    settings: NodeAgentSettings,
    *,
    resources: contextlib.ExitStack,
    unpaused: threading.Event,
) -> FixerParts:
    """Build the fixer on the target pod's libvirt socket and start it; ``resources`` closes it
    all, ``unpaused`` is set when the domain is unpaused."""
    socket = resources.enter_context(reachable_socket(target.socket))

    def observe(ev: LifecycleEvent) -> None:  # libvirt's event thread: record only
        if (ev.event, ev.detail) == (EventType.RESUMED, ResumedDetail.UNPAUSED):
            unpaused.set()

    parts = build_fixer(
        settings=settings.fixer,
        uri=settings.libvirt_uri_template.format(socket=socket),
        domain_name=target.domain,
        source=Source(
            vmi=lambda: vmi,
            annotations_file=None,
            links=dict,
            keys=settings.keys,
            kubevirt_family="v1.9+",
            pod_address=address_from_outside,
        ),
        metrics=Metrics(),
        observe=observe,
        max_backoff=1.0,
    )
    # Closed last in, first out: the dispatcher's worker (a late release being put back) ends
    # first, then the watcher, and only then the socket's descriptor.
    resources.callback(parts.watcher.stop)
    resources.callback(parts.dispatcher.stop, settings.fixer.detach_timeout_s)
    parts.dispatcher.start()
    parts.watcher.start()
    return parts


class DeferredFixupError(Exception):
    """The domain is paused: the fixup waits for its unpause (the call is answered meanwhile)."""


def _fix_on_unpause(
    target: TargetPod, fixer: Fixer, unpaused: threading.Event, resources: contextlib.ExitStack, only: list[str] | None
) -> None:
    """Wait for the unpause of a domain that arrived paused, then fix it; give up when the
    launcher pod is gone (its libvirt socket disappears with it)."""
    with resources:
        while not unpaused.wait(PAUSED_POLL_S):
            if not target.socket.exists():
                log.info("%s: the launcher pod is gone before its unpause; nothing to fix", target.domain)
                return
        try:
            # The guest resumed just now: the hold counts from here.
            record = fixer.run(trigger="unpaused-after-migration", resumed_at=time.time(), interfaces=only)
            log.info("fixup of %s after its unpause: %s (%s)", target.domain, record.result, record.message)
        except Exception as exc:
            log.warning("fixup of %s after its unpause failed: %s", target.domain, exc)
