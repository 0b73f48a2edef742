"""Carrying out a fixup plan against a libvirt domain.

Link refresh is two `updateDeviceFlags` calls around a pause. Reattach is a detach, a
wait for libvirt's DEVICE_REMOVED event, and an attach with the expected MAC; if anything
fails after the detach, the original `<interface>` is attached again so the guest never
stays without its NIC.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sidecar.domxml import parse_interfaces, with_link_state, with_mac
from sidecar.models import InterfaceFixup
from sidecar.plan import InterfacePlan

log = logging.getLogger(__name__)

# libvirt's virDomainDeviceModifyFlags values, spelled out so this module does not import
# libvirt (tests drive it with wrapped real domains; the numbers are the C API's).
MODIFY_LIVE = 1
MODIFY_CONFIG = 2


class Domain(Protocol):
    """The part of libvirt.virDomain the executor uses."""

    def name(self) -> str: ...
    def state(self) -> list[int]: ...
    def XMLDesc(self, flags: int = 0) -> str: ...  # noqa: N802 - libvirt's name
    def isPersistent(self) -> int: ...  # noqa: N802
    def updateDeviceFlags(self, xml: str, flags: int = 0) -> int: ...  # noqa: N802
    def detachDeviceFlags(self, xml: str, flags: int = 0) -> int: ...  # noqa: N802
    def attachDeviceFlags(self, xml: str, flags: int = 0) -> int: ...  # noqa: N802


@dataclass(frozen=True)
class LateRemoval:
    """A NIC the guest released after the executor had given up waiting: put it back."""

    domain: str
    alias: str
    xml: str
    flags: int


class DeviceRemovals:
    """DEVICE_REMOVED events, handed from the libvirt event thread to the executor.

    A detach the guest has not honoured within the timeout stays pending in the guest (ACPI
    unplug) and may complete later; such NICs are "guarded", and when their removal arrives
    `on_late` is told (it must hand the work to another thread: it runs on libvirt's).
    """

    def __init__(self, on_late: Callable[[LateRemoval], None] | None = None) -> None:
        self._cond = threading.Condition()
        self._removed: set[tuple[str, str]] = set()
        self._guards: dict[tuple[str, str], LateRemoval] = {}
        self.on_late = on_late

    def expect(self, domain: str, alias: str) -> None:
        with self._cond:
            self._removed.discard((domain, alias))
            self._guards.pop((domain, alias), None)

    def guard(self, late: LateRemoval) -> None:
        with self._cond:
            self._guards[(late.domain, late.alias)] = late

    def removed(self, domain: str, alias: str) -> None:
        """Called from the event callback: records only, never calls libvirt."""
        with self._cond:
            self._removed.add((domain, alias))
            late = self._guards.pop((domain, alias), None)
            self._cond.notify_all()
        if late is not None:
            if self.on_late is not None:
                self.on_late(late)
            else:
                log.critical("%s was released late and nothing is set up to put it back", alias)

    def wait(self, domain: str, alias: str, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: (domain, alias) in self._removed, timeout)


@dataclass(frozen=True)
class ExecutorSettings:
    link_pause_s: float = 0.1
    detach_timeout_s: float = 30.0


def modify_flags(dom: Domain) -> int:
    """LIVE|CONFIG on a persistent domain (as after a KubeVirt migration), LIVE otherwise."""
    return MODIFY_LIVE | MODIFY_CONFIG if dom.isPersistent() else MODIFY_LIVE


def _record(plan: InterfacePlan, **kwargs: object) -> InterfaceFixup:
    return InterfaceFixup.model_validate(
        {
            "name": plan.name,
            "alias": plan.alias,
            "action": plan.action,
            "reason": plan.reason,
            "old_mac": plan.current_mac,
            "new_mac": plan.expected_mac,
            "mac_source": plan.mac_source,
            **kwargs,
        }
    )


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()


class Executor:
    def __init__(self, settings: ExecutorSettings, removals: DeviceRemovals) -> None:
        self.settings = settings
        self.removals = removals

    def apply(self, dom: Domain, plan: InterfacePlan) -> InterfaceFixup:
        start = time.monotonic()
        try:
            if plan.action == "link-refresh":
                result = self._link_refresh(dom, plan)
            elif plan.action == "reattach":
                result = self._reattach(dom, plan)
            else:
                result = _record(plan, result="skipped")
        except Exception as exc:
            log.exception("fixup of %s failed", plan.alias)
            result = _record(plan, result="failed", error=_error_text(exc))
        return result.model_copy(update={"duration_ms": (time.monotonic() - start) * 1000})

    def _link_refresh(self, dom: Domain, plan: InterfacePlan) -> InterfaceFixup:
        flags = modify_flags(dom)
        xml = plan.interface.xml
        dom.updateDeviceFlags(with_link_state(xml, "down"), flags)
        try:
            time.sleep(self.settings.link_pause_s)
        finally:
            # Whatever happens, try to bring the link back up.
            dom.updateDeviceFlags(with_link_state(xml, "up"), flags)
        return _record(plan, result="done", new_mac=plan.current_mac)

    def restore_late(self, dom: Domain, late: LateRemoval) -> bool:
        """Attach a late-released NIC back, unless something already did. True if attached."""
        if self._present(dom, late.alias):
            return False
        dom.attachDeviceFlags(late.xml, late.flags)
        log.warning("%s was released late by the guest; original NIC attached again", late.alias)
        return True

    def _present(self, dom: Domain, alias: str) -> bool:
        return any(i.alias == alias for i in parse_interfaces(dom.XMLDesc(0)))

    def _reattach(self, dom: Domain, plan: InterfacePlan) -> InterfaceFixup:
        assert plan.expected_mac is not None
        flags = modify_flags(dom)
        name = dom.name()
        original = plan.interface.xml
        self.removals.expect(name, plan.alias)
        dom.detachDeviceFlags(original, flags)
        # From here on the guest may have lost the NIC: every failure puts it back.
        try:
            gone = self.removals.wait(name, plan.alias, self.settings.detach_timeout_s)
            if not gone and self._present(dom, plan.alias):
                # The guest has not released the device; it still has its NIC, so stop here,
                # but the unplug request is still pending in the guest: if it completes later,
                # the original NIC is attached again (see DeviceRemovals).
                self.removals.guard(
                    LateRemoval(name, plan.alias, with_mac(original, plan.current_mac or plan.expected_mac), flags)
                )
                return _record(
                    plan,
                    result="failed",
                    new_mac=plan.current_mac,
                    error=f"guest did not release {plan.alias} within {self.settings.detach_timeout_s}s"
                    " (it will be re-attached if the guest releases it later)",
                )
            dom.attachDeviceFlags(with_mac(original, plan.expected_mac), flags)
        except Exception as exc:
            error = _error_text(exc)
            log.error("reattach of %s failed after detach (%s); attaching the original back", plan.alias, error)
            try:
                if not self._present(dom, plan.alias):
                    dom.attachDeviceFlags(with_mac(original, plan.current_mac or plan.expected_mac), flags)
            except Exception as restore_exc:
                log.critical("could not put %s back: %s", plan.alias, restore_exc)
                return _record(
                    plan,
                    result="failed",
                    new_mac=None,
                    error=f"{error}; restoring the original NIC failed too: {_error_text(restore_exc)}",
                )
            return _record(plan, result="restored", new_mac=plan.current_mac, error=error)
        return _record(plan, result="done")
