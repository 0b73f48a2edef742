"""A stand-in of KubeVirt's own reconcile of a running VMI's NICs (issue 23; docs/lab.md).

Every virt-handler sync of a running VMI on its node calls virt-launcher's ``SyncVMI``, whose
network sync acts on the live domain (docs/kubevirt-facts.md R1-R3): it reads the live XML (no
flags), attaches a Multus NIC that is missing from the domain with KubeVirt's own XML
(``AttachDeviceFlags(LIVE|CONFIG)``), then sets every interface whose live ``<link state>``
differs from the spec's back to the spec (``UpdateDeviceFlags(LIVE|CONFIG)``), stopping at the
first error. The spec has no ``<link>`` unless the VMI interface says ``state: down``, so a link
we hold down is raised by the next sync. :class:`Reconciler` does the same, from its own libvirt
connection to one pod's daemon (virt-launcher's), at KubeVirt's moments:

- the first sync of a migration target when the migration has ended there (R6, R7, R12): v1.7
  and later, the target launcher stamps the end once the domain resumed (or arrived paused) and
  a poll of its job info, at once and then every 100 ms, finds no incoming migration job;
  v1.6 stamps it at that lifecycle event itself; then ``ackMigrationCompletion`` hands the VMI
  to the main controller, which syncs. Before v1.6 the source virt-handler hands it over once
  the source domain stopped with reason migrated (the lab tells :meth:`source_stopped`).
  The hand-over itself (a domain notification, an API write, a watch event) takes
  ``ack_delay_s``: **a lab choice** (0.2 s), not a figure read in KubeVirt;
- a sync on every libvirt domain event the launcher forwards (R8): lifecycle, device added,
  device removed, memory device size change, guest agent connect/disconnect, and from v1.8 job
  completed, each ``event_delay_s`` later (the notification and the queue: **a lab choice**,
  0.05 s; the workqueue itself adds no delay, R14); events that arrive while a sync is queued
  join it, as a work queue keeps a key once;
- the domain resync every 300 s (R8, ``--domain-resync-period-seconds``; its phase is
  virt-handler's own, here the reconciler's start);
- a failed sync is queued again after 5 ms, doubling per failure up to 1000 s (R14).

A pod's first domain (``migration_target=False``) is synced at once and on every event after
that; when it becomes a migration's source the lab calls :meth:`suspend`, as the main controller
skips a VMI whose migration is under way or that is a migration source (R13). A migration
target's events are ignored until its first sync, as its VMI is not yet the node's (R6).

``ReconcileTiming(mode="worst")`` replaces a target's first sync by the worst case for the
fixer: from the guest's resume on the target it reads the live XML every 10 ms and syncs at once
when the sync would undo something (a link down that the spec does not want down, or a Multus
NIC missing from the domain); after that one, events and resync as above. ``mode="off"``: no
reconcile at all (the lab before issue 23). Every sync is recorded in :attr:`Reconciler.syncs`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NamedTuple, get_args

import libvirt

from lab.shell import CommandError, ip

log = logging.getLogger(__name__)

ReconcileMode = Literal["kubevirt", "worst", "off"]
RECONCILE_MODES: Final[tuple[ReconcileMode, ...]] = get_args(ReconcileMode)

# KubeVirt's flags for both calls (affectDeviceLiveAndConfigLibvirtFlags; facts R2, R3).
LIVE_AND_CONFIG: Final = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG
USER_ALIAS_PREFIX: Final = "ua-"
MULTUS_STATUS: Final = "multus-status"  # an infoSource of status.interfaces (facts R3)
# Bindings whose interface the converter emits as a tap (``type='ethernet'``) NIC. bridge and
# masquerade are KubeVirt's (facts R2); macvtap is the lab's choice: the binding plugin's ``tap``
# domain attachment gives it the same interface type (V2), and whether SyncVMI compares its link
# state like a bridge's was not read (the fixer never changes that link now, so it never matters).
TAP_BINDINGS: Final = ("bridge", "masquerade", "macvtap")
# The virtio model of an amd64 VMI without useVirtioTransitional (facts R3).
VIRTIO_MODEL: Final = "virtio-non-transitional"


@dataclass(frozen=True)
class ReconcileTiming:
    """When the stand-in syncs. Defaults: KubeVirt's figures where read (R8, R12, R14), lab
    choices where not (``ack_delay_s``, ``event_delay_s``, the worst mode's poll and window)."""

    mode: ReconcileMode = "kubevirt"
    ack_delay_s: float = 0.2  # lab choice: end stamp -> ackMigrationCompletion -> first SyncVMI
    event_delay_s: float = 0.05  # lab choice: a libvirt event -> SyncVMI (notify, informer, queue)
    resync_s: float = 300.0  # R8: virt-handler's domain resync period
    end_poll_s: float = 0.1  # R12: the target launcher polls the domain's job every 100 ms
    end_poll_window_s: float = 3.0  # R12: ... for up to 3 s per attempt
    end_retries_s: tuple[float, ...] = (1.0, 2.0, 3.0)  # R12: pauses between attempts
    retry_base_s: float = 0.005  # R14: first requeue after an error, doubling per failure
    retry_max_s: float = 1000.0  # R14
    worst_poll_s: float = 0.01  # worst mode: live XML read every 10 ms from the resume
    worst_window_s: float = 30.0  # worst mode: nothing to undo by then: the first sync anyway

    def __post_init__(self) -> None:
        if self.mode not in RECONCILE_MODES:
            raise ValueError(f"reconcile mode {self.mode!r}: one of {', '.join(RECONCILE_MODES)}")


def timing_of(reconcile: ReconcileTiming | ReconcileMode) -> ReconcileTiming:
    """A mode name or a full timing, as ``Lab(reconcile=...)`` takes either."""
    return reconcile if isinstance(reconcile, ReconcileTiming) else ReconcileTiming(mode=reconcile)


@dataclass(frozen=True)
class Change:
    """One thing a sync did to the domain: a link state set (``before`` -> ``after``, None: no
    ``<link>`` element), or a NIC attached (``after``: its MAC and tap)."""

    interface: str
    action: Literal["link", "attach"]
    before: str | None
    after: str | None

    def __str__(self) -> str:
        if self.action == "attach":
            return f"{self.interface}: attached {self.after}"
        return f"{self.interface}: link {self.before or 'none'} -> {self.after or 'none'}"


class Sync(NamedTuple):
    """One sync: when it started (host epoch seconds), why, what it changed, its error."""

    at: float
    reason: str
    changes: tuple[Change, ...]
    error: str | None = None

    def describe(self) -> str:
        done = "; ".join(str(c) for c in self.changes) or "no change"
        return f"{self.reason}: {done}" + (f"; error: {self.error}" if self.error else "")


# --- the decision, pure ------------------------------------------------------------------------


def alias_name(alias: str) -> str:
    """The VMI interface name of a domain alias: ``ua-<name>`` -> ``<name>``; any other alias
    stands for itself (KubeVirt's ``Alias.GetName``), and so matches no VMI interface."""
    return alias.removeprefix(USER_ALIAS_PREFIX)


def live_interfaces(domain_xml: str) -> dict[str, ET.Element]:
    """Interface name (alias without ``ua-``) -> its ``<interface>`` element in ``domain_xml``."""
    out: dict[str, ET.Element] = {}
    for iface in ET.fromstring(domain_xml).iter("interface"):
        alias = iface.find("alias")
        if alias is not None and alias.get("name"):
            out[alias_name(alias.get("name", ""))] = iface
    return out


def link_state(iface: ET.Element) -> str | None:
    link = iface.find("link")
    return None if link is None else link.get("state")


def live_link_states(domain_xml: str) -> dict[str, str | None]:
    """Interface name -> its live ``<link state>`` (None: no ``<link>`` element)."""
    return {name: link_state(iface) for name, iface in live_interfaces(domain_xml).items()}


def _spec_interfaces(vmi: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    ifaces = vmi.get("spec", {}).get("domain", {}).get("devices", {}).get("interfaces", [])
    return [i for i in ifaces if isinstance(i, Mapping) and isinstance(i.get("name"), str)]


def desired_link_states(vmi: Mapping[str, Any]) -> dict[str, str | None]:
    """Interface name -> the ``<link state>`` of the domain KubeVirt builds from the VMI spec
    (facts R2): ``down`` for ``state: down``, else none; only interfaces the converter emits as
    taps, and none that is ``state: absent``."""
    out: dict[str, str | None] = {}
    for iface in _spec_interfaces(vmi):
        if iface.get("state") == "absent" or "sriov" in iface:
            continue
        if not any(binding in iface for binding in TAP_BINDINGS):
            continue
        out[iface["name"]] = "down" if iface.get("state") == "down" else None
    return out


def link_changes(desired: Mapping[str, str | None], live: Mapping[str, str | None]) -> dict[str, str | None]:
    """The links a sync sets, name -> the state it sends (None: no ``<link>``), as
    ``updateDomainLinkState`` decides (facts R2): an interface missing from the live domain is
    skipped; two missing states are equal, one missing differs, else they compare by value."""
    return {name: want for name, want in desired.items() if name in live and live[name] != want}


def nics_to_hotplug(vmi: Mapping[str, Any], live: Collection[str]) -> list[str]:
    """The Multus NICs a sync attaches (facts R3): a ``status.interfaces`` entry whose infoSource
    lists ``multus-status``, no live interface with its name, its spec interface there, not
    ``state: absent`` and not SR-IOV. KubeVirt walks a map (any order); the lab takes the
    order of ``spec.networks``."""
    status = vmi.get("status", {}).get("interfaces", [])
    multus = {
        s["name"]
        for s in status
        if isinstance(s, Mapping)
        and isinstance(s.get("name"), str)
        and MULTUS_STATUS in str(s.get("infoSource", "")).split(", ")
    }
    spec = {i["name"]: i for i in _spec_interfaces(vmi)}
    names = [n.get("name") for n in vmi.get("spec", {}).get("networks", []) if isinstance(n, Mapping)]
    return [
        name
        for name in names
        if isinstance(name, str)
        and name in multus
        and name not in live
        and name in spec
        and spec[name].get("state") != "absent"
        and "sriov" not in spec[name]
    ]


@dataclass(frozen=True)
class SyncPlan:
    """What one sync will do, decided from the VMI and the live XML read at its start."""

    hotplug: list[str]
    links: dict[str, str | None]  # name -> the state sent
    live_links: dict[str, str | None] = field(default_factory=dict)

    @property
    def undoes_ours(self) -> bool:
        """A link that is down and goes up, or a NIC attached back: what the worst mode waits for."""
        return bool(self.hotplug) or any(self.live_links.get(n) == "down" for n in self.links)


def plan_sync(vmi: Mapping[str, Any], domain_xml: str) -> SyncPlan:
    live = live_link_states(domain_xml)
    return SyncPlan(
        hotplug=nics_to_hotplug(vmi, live),
        links=link_changes(desired_link_states(vmi), live),
        live_links=live,
    )


def with_link(iface: ET.Element, state: str | None) -> str:
    """The interface's XML with ``state`` as its ``<link>`` (None: without one), lower-cased as
    KubeVirt sends it (facts R2)."""
    copy = ET.fromstring(ET.tostring(iface, encoding="unicode"))
    for link in copy.findall("link"):
        copy.remove(link)
    if state is not None:
        ET.SubElement(copy, "link", state=state)
    return ET.tostring(copy, encoding="unicode").lower()


def with_link_states(domain_xml: str, states: Mapping[str, str]) -> str:
    """A whole domain XML with these interfaces' ``<link state>`` set (a VMI spec's ``state:
    down`` in the domain virt-launcher defines, facts R2)."""
    root = ET.fromstring(domain_xml)
    for iface in root.iter("interface"):
        alias = iface.find("alias")
        name = alias_name(alias.get("name", "")) if alias is not None else ""
        if name in states:
            for link in iface.findall("link"):
                iface.remove(link)
            ET.SubElement(iface, "link", state=states[name])
    return ET.tostring(root, encoding="unicode")


def hotplug_xml(*, name: str, mac: str, target: str, mtu: int, link_down: bool = False) -> str:
    """KubeVirt's interface for a hot-plugged tap NIC (facts R3), lower-cased: ``ethernet``, the
    virtio model, the tap (``managed='no'``), the MAC, the pod link's MTU, ``<link
    state='down'/>`` only under ``state: down``, alias ``ua-<name>``, the ROM off (no boot order).
    No ``<driver>``: KubeVirt sets one only for multi-queue or IOMMU."""
    iface = ET.Element("interface", type="ethernet")
    ET.SubElement(iface, "target", dev=target, managed="no")
    ET.SubElement(iface, "model", type=VIRTIO_MODEL)
    ET.SubElement(iface, "mac", address=mac)
    ET.SubElement(iface, "mtu", size=str(mtu))
    if link_down:
        ET.SubElement(iface, "link", state="down")
    ET.SubElement(iface, "alias", name=USER_ALIAS_PREFIX + name)
    ET.SubElement(iface, "rom", enabled="no")
    return ET.tostring(iface, encoding="unicode").lower()


def spec_mac(vmi: Mapping[str, Any], name: str) -> str | None:
    for iface in _spec_interfaces(vmi):
        if iface["name"] == name and isinstance(iface.get("macAddress"), str) and iface["macAddress"]:
            return str(iface["macAddress"])
    return None


def pod_interface_name(vmi: Mapping[str, Any], name: str) -> str | None:
    """The pod interface virt-controller reported for network ``name`` (status.interfaces)."""
    for entry in vmi.get("status", {}).get("interfaces", []):
        if isinstance(entry, Mapping) and entry.get("name") == name and entry.get("podInterfaceName"):
            return str(entry["podInterfaceName"])
    return None


def multus_tap_name(pod_interface: str) -> str:
    """The tap of a secondary Multus network: ``tap`` + the pod interface's name after ``pod``."""
    return "tap" + pod_interface[3:]


_VERSION = re.compile(r"v?(\d+)\.(\d+)")


def handover_kind(version: str) -> Literal["source", "event", "job-poll"]:
    """How a target's first sync is reached in ``version`` (facts R7, R12): the source hands the
    VMI over (v1.5), the target acks an end stamped at the resume event (v1.6), or at the end of
    a job poll after it (v1.7 and later)."""
    m = _VERSION.match(version.strip())
    if m is None:
        raise ValueError(f"not a KubeVirt version: {version!r}")
    minor = (int(m[1]), int(m[2]))
    if minor < (1, 6):
        return "source"
    return "event" if minor < (1, 7) else "job-poll"


def forwards_job_completed(version: str) -> bool:
    """virt-launcher registers a job-completed callback from v1.8 on (facts R8)."""
    m = _VERSION.match(version.strip())
    return m is not None and (int(m[1]), int(m[2])) >= (1, 8)


# --- the stand-in --------------------------------------------------------------------------------

_LIFECYCLE = {0: "DEFINED", 1: "UNDEFINED", 2: "STARTED", 3: "SUSPENDED", 4: "RESUMED", 5: "STOPPED", 6: "SHUTDOWN"}


def _arrived(event: int, detail: int) -> bool:
    """The target launcher's cue that the migration is over there: resumed after migrating, or
    arrived paused (facts R12)."""
    resumed = (libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_MIGRATED)
    paused = (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED)
    return (event, detail) in (resumed, paused)


class Reconciler:
    """KubeVirt's reconcile of one VMI in one virt-launcher pod, from its own libvirt connection.

    ``vmi(live_xml)`` returns the VMI as virt-handler holds it (its status reported from that
    live XML). ``netns``: the pod's network namespace, where the pod interfaces are read.
    ``migration_target``: the pod is a migration's target, whose first sync waits for the
    migration's end (module docstring); otherwise the domain runs already and is synced now.
    """

    def __init__(
        self,
        *,
        pod: str,
        uri: str,
        netns: str,
        domain: str,
        vmi: Callable[[str], Mapping[str, Any]],
        timing: ReconcileTiming,
        kubevirt_version: str,
        migration_target: bool,
    ) -> None:
        if timing.mode == "off":
            raise ValueError("reconcile mode off: start no Reconciler")
        self.pod = pod
        self.netns = netns
        self.domain = domain
        self.vmi = vmi
        self.timing = timing
        self.kubevirt_version = kubevirt_version
        self.handover = handover_kind(kubevirt_version)
        self.migration_target = migration_target
        self.syncs: list[Sync] = []
        self.ended_at: float | None = None  # the migration's end as the target stamped it
        self.ignored: list[tuple[float, str]] = []  # events before the first sync of a target
        self._cond = threading.Condition()
        # From when the VMI is this node's to sync (None: not yet, or no longer).
        self._active_from: float | None = None if migration_target else time.time()
        self._arrived = False
        self._stopped = False
        self._due: float | None = None
        self._reasons: list[str] = []
        self._failures = 0
        self._next_resync = time.time() + timing.resync_s
        self._threads: list[threading.Thread] = []
        self.conn: Any = libvirt.open(uri)
        self._callbacks: list[int] = []
        self._register()
        self._spawn(self._work, "worker")
        if not migration_target:
            self._request("domain running", at=time.time())

    # --- libvirt events (called on libvirt's event-loop thread: no libvirt calls here) -------
    def _register(self) -> None:
        events: list[tuple[int, Callable[..., None]]] = [
            (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle),
            (libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED, self._on_device("device-added")),
            (libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, self._on_device("device-removed")),
            (libvirt.VIR_DOMAIN_EVENT_ID_MEMORY_DEVICE_SIZE_CHANGE, self._on_device("memory-device-size-change")),
            (libvirt.VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE, self._on_agent),
        ]
        if forwards_job_completed(self.kubevirt_version):
            events.append((libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, self._on_job_completed))
        for event_id, callback in events:
            self._callbacks.append(self.conn.domainEventRegisterAny(None, event_id, callback, None))

    def _ours(self, dom: Any) -> bool:
        try:
            name: str = dom.name()
        except libvirt.libvirtError:
            return False
        return name == self.domain

    def _on_lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: object) -> None:
        if not self._ours(dom):
            return
        if self.migration_target and not self._arrived and _arrived(event, detail):
            self._arrived = True
            self._on_arrival(time.time())
        self._request(f"lifecycle {_LIFECYCLE.get(event, event)}/{detail}")

    def _on_device(self, what: str) -> Callable[..., None]:
        def callback(_conn: Any, dom: Any, *args: object) -> None:
            if self._ours(dom):
                alias = args[0] if args and isinstance(args[0], str) else ""
                self._request(f"{what} {alias}".strip())

        return callback

    def _on_agent(self, _conn: Any, dom: Any, state: int, _reason: int, _opaque: object) -> None:
        if self._ours(dom):
            connected = state == libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_CONNECTED
            self._request(f"agent {'connected' if connected else 'disconnected'}")

    def _on_job_completed(self, _conn: Any, dom: Any, _params: object, _opaque: object) -> None:
        if self._ours(dom):
            self._request("job completed")

    # --- the moments ---------------------------------------------------------------------------
    def _on_arrival(self, at: float) -> None:
        """The guest resumed (or arrived paused) on this target."""
        if self.timing.mode == "worst":
            self._spawn(self._worst_poll, "worst")
        elif self.handover == "event":
            self._ended(at)
        elif self.handover == "job-poll":
            self._spawn(self._end_monitor, "end-monitor")
        # "source": the lab calls source_stopped()

    def source_stopped(self, at: float) -> None:
        """The source domain stopped with reason migrated at ``at``: before v1.6 the source
        virt-handler hands the VMI over now (facts R7, R12)."""
        if self.migration_target and self.handover == "source" and self.timing.mode == "kubevirt":
            self._ended(at)

    def _ended(self, at: float) -> None:
        self.ended_at = at
        self._request("migration ended on the target", at=at + self.timing.ack_delay_s, activate=True)

    def _end_monitor(self) -> None:
        """The target launcher's end stamp, v1.7 and later (facts R12): the domain's job polled
        at once and every 100 ms for up to 3 s until no incoming migration job shows; between
        attempts 1, 2, 3 s; after the last, the end is stamped anyway."""
        t = self.timing
        for attempt in range(len(t.end_retries_s) + 1):
            deadline = time.time() + t.end_poll_window_s
            done: bool | None = False
            while not self._stopped:
                done = self._no_incoming_job()
                if done is not False or time.time() >= deadline:
                    break
                time.sleep(t.end_poll_s)
            if self._stopped:
                return
            if done is True or attempt == len(t.end_retries_s):
                break
            time.sleep(t.end_retries_s[attempt])
        self._ended(time.time())

    def _no_incoming_job(self) -> bool | None:
        """True: no migration job coming in; False: one is (or the job could not be read: try
        again); None: the domain is gone (the attempt fails)."""
        try:
            dom = self.conn.lookupByName(self.domain)
        except libvirt.libvirtError:
            return None
        try:
            stats = dom.jobStats()
        except libvirt.libvirtError:
            return False
        return bool(
            stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE
            or stats.get("operation") != libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN
        )

    def _worst_poll(self) -> None:
        """Worst mode: the live XML every ``worst_poll_s`` from the resume; the first sync the
        moment it would undo something of ours, or at the end of the window."""
        t = self.timing
        deadline = time.time() + t.worst_window_s
        while not self._stopped and time.time() < deadline:
            try:
                live = self.conn.lookupByName(self.domain).XMLDesc(0)
                if plan_sync(self.vmi(live), live).undoes_ours:
                    self._request("worst case: right after our change", at=time.time(), activate=True)
                    return
            except libvirt.libvirtError:
                pass
            time.sleep(t.worst_poll_s)
        if not self._stopped:
            self._request(f"worst case: nothing to undo within {t.worst_window_s:g} s", at=time.time(), activate=True)

    def suspend(self) -> None:
        """This pod's domain is now a migration's source: no syncs (facts R13)."""
        with self._cond:
            self._active_from = None
            self._due = None
            self._reasons = []

    def resume(self) -> None:
        """The migration failed: the source is synced again."""
        with self._cond:
            self._active_from = time.time()
            self._cond.notify_all()

    # --- the queue and the worker ----------------------------------------------------------------
    def _active(self, now: float) -> bool:
        return self._active_from is not None and self._active_from <= now

    def _request(self, reason: str, *, at: float | None = None, activate: bool = False) -> None:
        """Queue a sync at ``at`` (default: after the event delay). ``activate``: this is the
        first sync of a target; the VMI is the node's from ``at`` on, and events before then
        are not synced (facts R6)."""
        now = time.time()
        due = now + self.timing.event_delay_s if at is None else at
        with self._cond:
            if self._stopped:
                return
            if activate and not self._active(due):
                self._active_from = due
            elif not activate and not self._active(now):
                self.ignored.append((now, reason))
                return
            if self._due is None or due < self._due:
                self._due = due
            self._reasons.append(reason)
            self._cond.notify_all()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    now = time.time()
                    if self._due is not None and self._due <= now:
                        break
                    if self._next_resync <= now:
                        self._next_resync += self.timing.resync_s
                        if self._active(now):
                            self._due = now
                            self._reasons.append("resync")
                            continue
                    wake = self._next_resync if self._due is None else min(self._due, self._next_resync)
                    self._cond.wait(timeout=max(0.0, wake - now))
                if self._stopped:
                    return
                reason = ", ".join(dict.fromkeys(self._reasons))
                self._due, self._reasons = None, []
            record = self.sync(reason)
            if record is None:
                continue
            if record.error is None:
                self._failures = 0
                continue
            # virt-handler requeues the VMI rate-limited (facts R14).
            self._failures += 1
            delay = min(self.timing.retry_base_s * 2 ** (self._failures - 1), self.timing.retry_max_s)
            self._request(f"requeued after error {self._failures}", at=time.time() + delay)

    def sync(self, reason: str) -> Sync | None:
        """One ``SyncVMI`` network sync now (facts R1-R3); recorded, and returned. None: the
        domain is not here or not running (no network sync then)."""
        at = time.time()
        try:
            dom = self.conn.lookupByName(self.domain)
            if not dom.isActive():
                return None
            live = dom.XMLDesc(0)
        except libvirt.libvirtError:
            return None
        changes: list[Change] = []
        error: str | None = None
        try:
            vmi = self.vmi(live)
            plan = plan_sync(vmi, live)
            for name in plan.hotplug:
                xml, what = self._hotplug(vmi, name)
                dom.attachDeviceFlags(xml, LIVE_AND_CONFIG)
                changes.append(Change(name, "attach", None, what))
            interfaces = live_interfaces(live)
            for name, state in plan.links.items():
                dom.updateDeviceFlags(with_link(interfaces[name], state), LIVE_AND_CONFIG)
                changes.append(Change(name, "link", plan.live_links.get(name), state))
        except (libvirt.libvirtError, CommandError, LookupError) as exc:
            error = str(exc)
            log.warning("%s: kubevirt sync (%s) failed after %d change(s): %s", self.pod, reason, len(changes), exc)
        record = Sync(at, reason, tuple(changes), error)
        with self._cond:
            self.syncs.append(record)
        if changes:
            log.info("%s: kubevirt sync (%s): %s", self.pod, reason, record.describe())
        return record

    def _hotplug(self, vmi: Mapping[str, Any], name: str) -> tuple[str, str]:
        """KubeVirt's XML for NIC ``name`` in this pod (facts R3): the spec MAC, else the pod
        interface's; the network's tap if the pod has it, else the pod interface; its MTU."""
        pod_iface = pod_interface_name(vmi, name)
        if pod_iface is None:
            raise LookupError(f"no pod interface reported for network {name}")
        shown = ip(self.netns, "-o", "link", "show", "dev", pod_iface)
        mac_match = re.search(r"link/ether (\S+)", shown)
        mtu_match = re.search(r"\bmtu (\d+)", shown)
        if mac_match is None or mtu_match is None:
            raise LookupError(f"{pod_iface} in {self.netns}: no MAC or MTU in {shown!r}")
        tap = multus_tap_name(pod_iface)
        target = tap if ip(self.netns, "-o", "link", "show", "dev", tap, check=False).strip() else pod_iface
        mac = spec_mac(vmi, name) or mac_match[1]
        link_down = desired_link_states(vmi).get(name) == "down"
        xml = hotplug_xml(name=name, mac=mac, target=target, mtu=int(mtu_match[1]), link_down=link_down)
        return xml, f"mac {mac.lower()} on {target}"

    # --- lifetime --------------------------------------------------------------------------------
    def _spawn(self, target: Callable[[], None], what: str) -> None:
        thread = threading.Thread(target=target, name=f"reconcile-{self.pod}-{what}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def changes(self) -> list[tuple[float, Change]]:
        """Every change of every sync so far, with the time of its sync."""
        with self._cond:
            return [(s.at, c) for s in self.syncs for c in s.changes]

    def stop(self) -> None:
        """No more syncs; the connection is closed (the pod is being deleted)."""
        with self._cond:
            if self._stopped:
                return
            self._stopped = True
            self._cond.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=10)
        for callback_id in self._callbacks:
            with contextlib.suppress(libvirt.libvirtError):
                self.conn.domainEventDeregisterAny(callback_id)
        with contextlib.suppress(libvirt.libvirtError):
            self.conn.close()
