"""FAKE libvirt domain for the fast lane: `FakeDomain` stands in for a `libvirt.virDomain`.

Why a fake: the executor's riskiest paths (a reattach whose attach fails, a guest that never or
only later releases a detached NIC, libvirt dying in the middle of a reattach) need root, a
libvirt daemon and a QEMU guest to run for real (tests/sidecar/fixer/test_lab_*.py do, and stay),
and libvirt's in-process `test:///default` driver has no device calls at all (LAB-NOTES,
"libvirt calls that matter"). This fake implements the `sidecar.core.domain.Domain` Protocol
with libvirt's behaviour as the lab and docs/reliability.md recorded it. Where the fake's
behaviour rests on a belief about libvirt that was not checked in the lab or in libvirt's
source, a comment says "unverified".

What it models:
- two definitions kept apart: the live one (`XMLDesc(0)`) and the persistent one
  (`XMLDesc(VIR_DOMAIN_XML_INACTIVE)`); a transient domain has only the live one;
- `updateDeviceFlags`: the `<link state>` of an `<interface>`, live and/or in the definition;
- `detachDeviceFlags`: accepted at once and the NIC dropped from the definition, but from the
  live domain only when the guest releases it (ACPI unplug): after a delay, when the test says so
  (a guest that lets go late), or never. Its release is then reported as libvirt's DEVICE_REMOVED
  event: `DeviceRemovals.removed(domain, alias)` on another thread, as the watcher's
  `_device_removed_cb` does from libvirt's event thread;
- `attachDeviceFlags`, refusing an alias the definition it goes to already has;
- errors as libvirt raises them: `libvirt.libvirtError` carrying libvirt's own error numbers;
  any device call can be made to fail on its Nth call; libvirt can die and come back.
"""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass

import libvirt

from sidecar.core.domain import DomainState, RunningReason
from sidecar.core.removals import DeviceRemovals

LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG
INACTIVE = libvirt.VIR_DOMAIN_XML_INACTIVE
DEVICE_CALLS = ("updateDeviceFlags", "detachDeviceFlags", "attachDeviceFlags")


def libvirt_error(code: int, message: str, domain: int = libvirt.VIR_FROM_QEMU) -> libvirt.libvirtError:
    """libvirt's own exception class with the code and text libvirt gives (`err` as the binding fills it)."""
    libvirt.virResetLastError()  # the constructor would take the text of this thread's last real error
    err = libvirt.libvirtError(message)
    err.err = (code, domain, message, libvirt.VIR_ERR_ERROR, "", None, None, 0, 0)
    return err


def busy_error() -> libvirt.libvirtError:
    """What a device call gets while another job (an incoming migration's) holds the domain:
    the text test_lab_executor.py replays, after libvirt's own 30 s wait on the job lock."""
    return libvirt_error(
        libvirt.VIR_ERR_OPERATION_TIMEOUT,
        "Timed out during operation: cannot acquire state change lock"
        " (held by monitor=remoteDispatchDomainMigrateFinish3Params)",
    )


def connection_closed_error() -> libvirt.libvirtError:
    # What a call on a connection whose daemon died raises (libvirt's RPC layer).
    return libvirt_error(
        libvirt.VIR_ERR_INTERNAL_ERROR, "internal error: client socket is closed", libvirt.VIR_FROM_RPC
    )


def _mac(elem: ET.Element) -> str | None:
    mac = elem.find("mac")
    address = None if mac is None else mac.get("address")
    return None if address is None else address.lower()


def _alias(elem: ET.Element) -> str | None:
    alias = elem.find("alias")
    return None if alias is None else alias.get("name")


def _pci(elem: ET.Element) -> tuple[int, ...] | None:
    addr = elem.find("address")
    if addr is None or addr.get("type") != "pci":
        return None
    return tuple(int(addr.get(part, "0"), 16) for part in ("domain", "bus", "slot", "function"))


def _link(elem: ET.Element) -> str:
    link = elem.find("link")
    return "down" if link is not None and link.get("state") == "down" else "up"


def _devices(root: ET.Element) -> ET.Element:
    devices = root.find("devices")
    assert devices is not None, "a domain XML without <devices>"
    return devices


def _describe(want: ET.Element) -> str:
    return f"MAC address {_mac(want)}" + (f" on {_pci(want)}" if _pci(want) else "")


@dataclass
class _Fault:
    nth: int
    error: libvirt.libvirtError | None  # raised, nothing changed
    after: Callable[[], None] | None  # run once the call has done its work, before it returns


class FakeDomain:
    """FAKE `libvirt.virDomain` (see the module docstring): one running domain, its live and
    persistent definitions, a guest that honours ACPI unplug requests (or not), the libvirt
    events it causes, and libvirt's errors on demand.

    ``release_after_s``: how long the guest takes to release a detached NIC; None for a guest
    that does not act on the unplug request by itself (`guest_releases` then lets go, late).
    ``events`` receives DEVICE_REMOVED (and, when libvirt dies, `connection_lost`) as the
    watcher would hand them on.
    """

    def __init__(
        self,
        live_xml: str,
        *,
        persistent: bool = True,
        config_xml: str | None = None,
        events: DeviceRemovals | None = None,
        release_after_s: float | None = 0.01,
    ) -> None:
        self._live = ET.fromstring(live_xml)
        # libvirt keeps user (`ua-`) aliases, the MAC, a managed='no' target and the PCI address
        # in the inactive XML, so the definition of a freshly migrated persistent domain reads like
        # the live one for an <interface> (the executor and the lab tests also allow for an
        # inactive XML without the alias; this fake always keeps it).
        self._config = ET.fromstring(config_xml or live_xml) if persistent else None
        self._events = events
        self.release_after_s = release_after_s
        self._lock = threading.RLock()
        self._alive = True
        self._pending: dict[str, ET.Element] = {}  # alias -> live NIC whose unplug the guest has not done
        self._faults: dict[str, list[_Fault]] = {name: [] for name in DEVICE_CALLS}
        self._counts = dict.fromkeys(DEVICE_CALLS, 0)
        self._die_inside_detach = False
        self._threads: list[threading.Thread] = []
        self.calls: list[tuple[str, int]] = []  # (method, flags) of every device call libvirt accepted
        self.guest_saw: list[str] = []  # what the guest noticed, as the lab guest's console reports it
        # The guest agent: None is a guest without one (libvirt's "not connected" error); else
        # called for each interfaceAddresses(SRC_AGENT) and answers as libvirt-python does (or raises).
        self.agent: Callable[[], object] | None = None
        # The guest's vCPU run time in ns for vcpus(); None: libvirt cannot tell (raises).
        self.vcpu_ns: Callable[[], int] | None = None
        self._metadata: dict[str, str] = {}  # namespace URI -> element (libvirt's <metadata> children)

    # --- the Domain Protocol ---
    def name(self) -> str:
        # A local accessor in libvirt-python: it answers with the daemon gone too.
        return self._live.findtext("name", "")

    def state(self) -> list[int]:
        self._require_alive()
        return [DomainState.RUNNING, RunningReason.MIGRATED]

    def isPersistent(self) -> int:  # noqa: N802 - libvirt's name
        self._require_alive()
        return int(self._config is not None)

    def XMLDesc(self, flags: int = 0) -> str:  # noqa: N802
        self._require_alive()
        with self._lock:
            # A transient domain answers INACTIVE with its live definition (unverified whether
            # libvirt drops anything more from it; nothing here relies on that).
            root = self._config if flags & INACTIVE and self._config is not None else self._live
            return ET.tostring(root, encoding="unicode")

    def updateDeviceFlags(self, xml: str, flags: int = 0) -> int:  # noqa: N802
        after = self._begin("updateDeviceFlags")
        with self._lock:
            want = ET.fromstring(xml)
            # Both definitions are checked before either changes: libvirt updates a copy of the
            # definition, then the live domain, and saves the copy only if both worked (from
            # reading libvirt's qemu driver, unverified in the lab).
            targets = [(where, self._find(root, want)) for where, root in self._roots(flags)]
            for where, nic in targets:
                was, now = _link(nic), _link(want)
                for old in nic.findall("link"):
                    nic.remove(old)
                if now == "down":
                    ET.SubElement(nic, "link", {"state": "down"})
                if where == "live" and was != now:
                    self.guest_saw.append(f"carrier-{now} {_alias(nic)}")
            # Other fields of the XML are ignored here; libvirt refuses to change most of them.
        return self._done("updateDeviceFlags", flags, after)

    def detachDeviceFlags(self, xml: str, flags: int = 0) -> int:  # noqa: N802
        after = self._begin("detachDeviceFlags")
        with self._lock:
            want = ET.fromstring(xml)
            found = {where: (root, self._find(root, want)) for where, root in self._roots(flags)}
            if "live" in found:
                alias = _alias(found["live"][1]) or ""
                if alias in self._pending:
                    # QEMU refuses a second device_del while the guest has not acted on the first
                    # (qmp_device_del; for ACPI PCI hotplug until QEMU 8.0, whose change lets the
                    # block expire after 1 ms, as native PCIe's does after 5 s: read on qemu-devel,
                    # unverified for the lab's QEMU 7.2). libvirt passes QEMU's text on. Nothing changes.
                    raise libvirt_error(
                        libvirt.VIR_ERR_INTERNAL_ERROR,
                        f"internal error: unable to execute QEMU command 'device_del': Device {alias}"
                        " is already in the process of unplug",
                    )
                self._pending[alias] = found["live"][1]
                if self._die_inside_detach:
                    # Killed inside the call: the guest had let go and libvirt had dropped the NIC
                    # live, but had not saved the definition yet (docs/reliability.md).
                    self._die_inside_detach = False
                    self._release(alias, deliver=False)
                    self._die()
                    raise connection_closed_error()
                self._schedule_release(alias)
            if "config" in found:
                # Dropped from the definition as soon as libvirt accepts the (asynchronous) detach.
                root, nic = found["config"]
                _devices(root).remove(nic)
            # libvirt waits up to 5 s for the guest inside this call, then returns 0 with the
            # unplug still pending; the fake returns at once (the executor waits for the event).
        return self._done("detachDeviceFlags", flags, after)

    def attachDeviceFlags(self, xml: str, flags: int = 0) -> int:  # noqa: N802
        after = self._begin("attachDeviceFlags")
        with self._lock:
            new = ET.fromstring(xml)
            roots = list(self._roots(flags))
            alias = _alias(new)
            for _where, root in roots:
                if alias and any(_alias(i) == alias for i in root.iter("interface")):
                    # Seen in the lab (a CONFIG attach after a detach cut short); libvirt checks the
                    # live domain the same way for LIVE (unverified in the lab). Nothing is attached.
                    raise libvirt_error(
                        libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
                        f"unsupported configuration: non unique alias detected: {alias}",
                    )
            # Not modelled (unverified what libvirt does): a second NIC with the same MAC or the same
            # PCI address; the attach XMLs the executor sends keep the NIC's own address.
            for where, root in roots:
                _devices(root).append(ET.fromstring(xml))
                if where == "live":
                    self.guest_saw.append(f"nic-up {alias} mac={_mac(new)}")
        return self._done("attachDeviceFlags", flags, after)

    def vcpus(self) -> tuple[list[tuple[int, int, int, int]], list[tuple[bool, ...]]]:
        self._require_alive()
        if self.vcpu_ns is None:
            raise libvirt_error(libvirt.VIR_ERR_OPERATION_INVALID, "Requested operation is not valid")
        return [(0, 1, self.vcpu_ns(), 0)], [(True,)]

    def interfaceAddresses(self, source: int, flags: int = 0) -> object:  # noqa: N802
        self._require_alive()
        if self.agent is None:
            # libvirt's text when the domain's agent channel is not connected (seen in the lab).
            raise libvirt_error(
                libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
                "Guest agent is not responding: QEMU guest agent is not connected",
            )
        return self.agent()

    def metadata(self, type: int, uri: str | None, flags: int = 0) -> str:
        self._require_alive()
        if uri not in self._metadata:
            raise libvirt_error(
                libvirt.VIR_ERR_NO_DOMAIN_METADATA, "metadata not found: Requested metadata element is not present"
            )
        return self._metadata[uri]

    def setMetadata(  # noqa: N802
        self, type: int, metadata: str | None, key: str | None, uri: str | None, flags: int = 0
    ) -> int:
        self._require_alive()
        assert uri is not None
        if metadata is None:
            self._metadata.pop(uri, None)
        else:
            self._metadata[uri] = metadata
        return 0

    # --- what the test does to the guest and to libvirt ---
    def fail_call(self, method: str, nth: int, error: libvirt.libvirtError) -> None:
        """The ``nth`` call of ``method`` (counted from 1, over the domain's life) raises ``error``
        and changes nothing."""
        self._faults[method].append(_Fault(nth, error, None))

    def after_call(self, method: str, nth: int, action: Callable[[], None]) -> None:
        """Run ``action`` once the ``nth`` call of ``method`` has done its work, before it returns."""
        self._faults[method].append(_Fault(nth, None, action))

    def die_inside_next_detach(self) -> None:
        """libvirt dies inside the next detach, after the guest released the NIC and libvirt dropped
        it live, before the definition was saved: the call raises, the definition keeps the NIC."""
        self._die_inside_detach = True

    def kill_libvirt(self) -> None:
        """The daemon dies (QEMU and the guest live on): every call raises until `restart_libvirt`,
        events are lost, and the watcher's part is done: waits for DEVICE_REMOVED stop."""
        self._die()

    def restart_libvirt(self) -> None:
        self._alive = True

    def guest_releases(self, alias: str) -> None:
        """The guest honours a pending unplug now (late): the NIC leaves the live domain and, if
        libvirt is up, DEVICE_REMOVED is delivered on another thread."""
        self._release(alias, deliver=True)

    def join(self) -> None:
        """Wait for the guest's scheduled releases and the events they deliver."""
        while True:
            with self._lock:
                threads = [t for t in self._threads if t.is_alive()]
            if not threads:
                return
            for thread in threads:
                thread.join(10)

    def live_nics(self) -> list[tuple[str | None, str | None, str]]:
        """(alias, MAC, link state) of each NIC the guest has."""
        with self._lock:
            return [(_alias(i), _mac(i), _link(i)) for i in self._live.iter("interface")]

    def defined_nics(self) -> list[tuple[str | None, str | None, str]]:
        """(alias, MAC, link state) of each NIC in the persistent definition."""
        with self._lock:
            assert self._config is not None, "a transient domain has no persistent definition"
            return [(_alias(i), _mac(i), _link(i)) for i in self._config.iter("interface")]

    # --- inside ---
    def _require_alive(self) -> None:
        if not self._alive:
            raise connection_closed_error()

    def _die(self) -> None:
        self._alive = False
        if self._events is not None:
            self._events.connection_lost()

    def _roots(self, flags: int) -> list[tuple[str, ET.Element]]:
        if flags & CONFIG and self._config is None:
            raise libvirt_error(
                libvirt.VIR_ERR_OPERATION_INVALID, "transient domains do not have any persistent config"
            )
        roots = [("config", self._config)] if flags & CONFIG and self._config is not None else []
        # AFFECT_CURRENT (0) is the live domain for a running one.
        if flags & LIVE or not flags:
            roots.append(("live", self._live))
        return roots

    @staticmethod
    def _find(root: ET.Element, want: ET.Element) -> ET.Element:
        """The one <interface> matching what the XML names: its MAC, and its PCI address and alias
        when given (libvirt's lookup by MAC, narrowed by address and alias; the alias part is
        unverified for the libvirt the lab runs). None found: VIR_ERR_DEVICE_MISSING."""
        found = [
            nic
            for nic in root.iter("interface")
            if all(
                wanted is None or have == wanted
                for have, wanted in ((_mac(nic), _mac(want)), (_pci(nic), _pci(want)), (_alias(nic), _alias(want)))
            )
        ]
        if not found:
            raise libvirt_error(
                libvirt.VIR_ERR_DEVICE_MISSING, f"device not found: no device matching {_describe(want)}"
            )
        if len(found) > 1:
            raise libvirt_error(libvirt.VIR_ERR_OPERATION_FAILED, f"multiple devices matching {_describe(want)} found")
        return found[0]

    def _schedule_release(self, alias: str) -> None:
        if self.release_after_s is None:
            return  # a guest that ignores the ACPI unplug request (or acts on it late)
        timer = threading.Timer(self.release_after_s, self._release, (alias,), {"deliver": True})
        timer.name = f"fake-guest-release-{alias}"
        self._start(timer)

    def _release(self, alias: str, *, deliver: bool) -> None:
        with self._lock:
            nic = self._pending.pop(alias, None)
            if nic is None:
                return
            _devices(self._live).remove(nic)
            self.guest_saw.append(f"nic-gone {alias} mac={_mac(nic)}")
            events = self._events if self._alive else None  # a dead daemon delivers nothing
        if deliver and events is not None:
            # libvirt's event loop thread calls the watcher, which calls DeviceRemovals.removed.
            self._start(threading.Thread(target=events.removed, args=(self.name(), alias), name="fake-libvirt-events"))

    def _start(self, thread: threading.Thread) -> None:
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _begin(self, method: str) -> list[Callable[[], None]]:
        """Count the call; raise what the test programmed for it. Returns what to run after it."""
        self._require_alive()
        with self._lock:
            self._counts[method] += 1
            faults = [f for f in self._faults[method] if f.nth == self._counts[method]]
        for fault in faults:
            if fault.error is not None:
                raise fault.error
        return [f.after for f in faults if f.after is not None]

    def _done(self, method: str, flags: int, after: list[Callable[[], None]]) -> int:
        with self._lock:
            self.calls.append((method, flags))
        for action in after:
            action()
        return 0
