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

import msgspec

from sidecar.core.domain import Domain
from sidecar.core.domxml import parse_interfaces, with_link_state, with_mac
from sidecar.core.models import FixupStep, InterfaceFixup
from sidecar.core.plan import InterfacePlan
from sidecar.core.removals import DeviceRemovals, LateRemoval
from sidecar.fixer import linkhold
from sidecar.fixer.linkhold import HoldReport
from sidecar.fixer.settings import FixerSettings

log = logging.getLogger(__name__)

# libvirt's virDomainDeviceModifyFlags values, spelled out so this module does not import
# libvirt (tests drive it with wrapped real domains; the numbers are the C API's).
MODIFY_LIVE = 1
MODIFY_CONFIG = 2
XML_INACTIVE = 2  # virDomainXMLFlags VIR_DOMAIN_XML_INACTIVE: the persistent definition
# virErrorNumber values meaning "another job holds the domain": VIR_ERR_OPERATION_TIMEOUT
# ("cannot acquire state change lock", after libvirt's own 30 s wait) and
# VIR_ERR_OPERATION_INVALID when the message names the migration job.
ERR_OPERATION_INVALID = 55
ERR_OPERATION_TIMEOUT = 68
ERR_DEVICE_MISSING = 99  # VIR_ERR_DEVICE_MISSING: "device not found"
JOB_RETRIES = 3
LINKWATCH_S = 1.0  # a Linux guest reports carrier-down at most once a second (settings.link_down_spacing_s)
JOB_RETRY_PAUSE_S = 1.0


def held_by_another_job(exc: BaseException) -> bool:
    """True for libvirt's "the domain is busy with another job" errors (e.g. the incoming
    migration's job, which can still be held when RESUMED/MIGRATED arrives on the target)."""
    code_of = getattr(exc, "get_error_code", None)
    if not callable(code_of):
        return False
    code = code_of()
    text = str(exc).lower()
    if code == ERR_OPERATION_TIMEOUT:
        return "lock" in text or "job" in text
    return code == ERR_OPERATION_INVALID and ("migration" in text or "job" in text)


def with_job_retry(call: Callable[[str, int], int], xml: str, flags: int, *, what: str) -> int:
    """Run a device call; when another job holds the domain, try again a bounded number of times.
    Safe for update/detach/attach: a call refused on the job lock changed nothing."""
    for attempt in range(1, JOB_RETRIES + 1):
        try:
            return call(xml, flags)
        except Exception as exc:
            if attempt == JOB_RETRIES or not held_by_another_job(exc):
                raise
            log.warning("%s: domain busy with another job (%s); retry %d of %d", what, exc, attempt, JOB_RETRIES - 1)
            time.sleep(JOB_RETRY_PAUSE_S)
    raise AssertionError("unreachable")


def modify_flags(dom: Domain) -> int:
    """LIVE|CONFIG on a persistent domain (as after a KubeVirt migration), LIVE otherwise."""
    return MODIFY_LIVE | MODIFY_CONFIG if dom.isPersistent() else MODIFY_LIVE


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()


class Executor:
    def __init__(self, settings: FixerSettings, removals: DeviceRemovals) -> None:
        self.settings = settings
        self.removals = removals
        # NICs detached (or being detached) whose return is not confirmed: libvirt went away
        # under the reattach. Settled once libvirt is back (`settle`): attached again if gone.
        self._unsettled: dict[tuple[str, str], LateRemoval] = {}
        self._unsettled_lock = threading.Lock()
        # When the guest's kernel reports our last link-down, at the earliest (time.monotonic()): it
        # reports carrier-down at most once a second, so a link-down within a second of the
        # previous report waits for that second to end (linkwatch). Set by every link-down we make.
        self._last_link_down: float | None = None

    def _space_link_down(self) -> None:
        """Wait until the guest has reported our last link-down and its once-a-second limit allows
        a new report (the spacing's margin included), then count this link-down."""
        if self._last_link_down is not None:
            wait = self._last_link_down + self.settings.link_down_spacing_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        self._count_link_down()

    def _count_link_down(self) -> None:
        now = time.monotonic()
        last = self._last_link_down
        # A link-down less than a second after the previous report is reported a second after it.
        self._last_link_down = now if last is None else max(now, last + LINKWATCH_S)

    def unsettled(self) -> list[LateRemoval]:
        with self._unsettled_lock:
            return list(self._unsettled.values())

    def _mark(self, late: LateRemoval, *, unsettled: bool) -> None:
        with self._unsettled_lock:
            if unsettled:
                self._unsettled[(late.domain, late.alias)] = late
            else:
                self._unsettled.pop((late.domain, late.alias), None)

    def settle(self, dom: Domain) -> list[str]:
        """After a reconnect: put back every unsettled NIC the domain lacks; a NIC still there
        may yet be released by the guest (its unplug request is pending), so it is guarded.
        Returns the aliases attached again. Raises if libvirt fails (they stay unsettled)."""
        attached = []
        for late in self.unsettled():
            if late.domain != dom.name():
                continue
            if self._present(dom, late.alias):
                self.removals.guard(late)
                # libvirt dropped the NIC from the definition when it accepted the detach; the
                # guest still has it, so the definition must too.
                self._attach_missing(dom, late)
                log.warning("%s is still in the domain after libvirt came back; guarding it", late.alias)
            elif self._attach_missing(dom, late):
                attached.append(late.alias)
                log.warning("%s was detached while libvirt was away; original NIC attached again", late.alias)
            self._mark(late, unsettled=False)
        return attached

    def apply(self, dom: Domain, plan: InterfacePlan, *, resumed_at: float | None = None) -> InterfaceFixup:
        """Carry out one interface's plan (one step of its escalation). ``resumed_at`` (wall clock)
        is when the guest resumed after a migration, None for a fixup asked for by hand: a link
        refresh then holds the link down for the pause only (sidecar/fixer/linkhold.py). The record
        carries this step in ``steps``."""
        start = time.monotonic()
        report: HoldReport | None = None
        try:
            if plan.action == "link-refresh":
                report = self._link_refresh(dom, plan, resumed_at)
                result = plan.record(result="done", new_mac=plan.current_mac)
            elif plan.action == "reattach":
                result = self._reattach(dom, plan)
            else:
                result = plan.record(result="skipped", new_mac=plan.expected_mac)
        except Exception as exc:
            log.exception("fixup of %s failed", plan.alias)
            result = plan.record(result="failed", new_mac=plan.expected_mac, error=_error_text(exc))
        took = (time.monotonic() - start) * 1000
        step = FixupStep(action=plan.action, result=result.result, detail=result.error or "", duration_ms=took)
        if report is not None:
            step = msgspec.structs.replace(
                step, held_ms=report.held_s * 1000, hold_ended_by=report.ended_by, reasserted=report.reasserted
            )
        return msgspec.structs.replace(result, duration_ms=took, steps=[step])

    def link_pause(self, resumed_at: float | None) -> float:
        """The longest a link refresh starting now keeps the link down (without a cut by another client)."""
        pause = self.settings.link_pause_s
        if resumed_at is not None:
            pause = max(pause, resumed_at + self.settings.resume_settle_s - time.time())
        return pause

    def _link_refresh(self, dom: Domain, plan: InterfacePlan, resumed_at: float | None) -> HoldReport:
        flags = modify_flags(dom)
        xml = plan.interface.xml
        self._space_link_down()
        try:
            with_job_retry(dom.updateDeviceFlags, with_link_state(xml, "down"), flags, what=f"{plan.alias} link down")
        except Exception as exc:
            # The live NIC is not always the definition's twin: after a NIC was put back (a late
            # release, a restore) the definition may hold it at another PCI address, and libvirt
            # then finds no matching device there. The carrier flap only matters live.
            code_of = getattr(exc, "get_error_code", None)
            if not (flags & MODIFY_CONFIG and callable(code_of) and code_of() == ERR_DEVICE_MISSING):
                raise
            log.warning(
                "%s: not found in the persistent definition (%s); refreshing the live link only", plan.alias, exc
            )
            flags = MODIFY_LIVE
            with_job_retry(dom.updateDeviceFlags, with_link_state(xml, "down"), flags, what=f"{plan.alias} link down")
        down = with_link_state(xml, "down")
        try:
            return linkhold.hold(
                dom,
                plan.alias,
                settings=self.settings,
                resumed_at=resumed_at,
                set_down=lambda: self._set_down_again(dom, down, flags, plan.alias),
            )
        finally:
            # Whatever happens, try to bring the link back up.
            with_job_retry(dom.updateDeviceFlags, with_link_state(xml, "up"), flags, what=f"{plan.alias} link up")

    def _set_down_again(self, dom: Domain, down_xml: str, flags: int, alias: str) -> None:
        """Set a link down again during its hold. It counts as a link-down for the spacing: the
        guest's kernel reports it at most a second after the previous one (see link_down_spacing_s),
        and a next NIC's flap inside that second would reach its network stack as no change."""
        with_job_retry(dom.updateDeviceFlags, down_xml, flags, what=f"{alias} link down")
        self._count_link_down()

    def restore_late(self, dom: Domain, late: LateRemoval) -> bool:
        """Attach a late-released NIC back, unless something already did. True if attached."""
        if not self._attach_missing(dom, late):
            return False
        log.warning("%s was released late by the guest; original NIC attached again", late.alias)
        return True

    def _present(self, dom: Domain, alias: str) -> bool:
        return any(i.alias == alias for i in parse_interfaces(dom.XMLDesc(0)))

    def _attach_missing(self, dom: Domain, late: LateRemoval) -> bool:
        """Attach the original NIC where it is missing: the live domain, the persistent
        definition, or both. A detach cut short (libvirt killed inside the call) can leave it
        gone from the live domain but still in the definition, which then refuses a second
        device with the same alias. True if anything was attached."""
        flags = 0
        if not self._present(dom, late.alias):
            flags |= MODIFY_LIVE
        if late.flags & MODIFY_CONFIG:
            inactive = parse_interfaces(dom.XMLDesc(XML_INACTIVE))
            original_mac = next((i.mac for i in parse_interfaces(late.xml)), None)
            # The inactive XML may omit the alias; the MAC then tells the NIC.
            if not any(i.alias == late.alias or (i.mac and i.mac == original_mac) for i in inactive):
                flags |= MODIFY_CONFIG
        if not flags:
            return False
        dom.attachDeviceFlags(late.xml, flags)
        return True

    def _reattach(self, dom: Domain, plan: InterfacePlan) -> InterfaceFixup:
        assert plan.expected_mac is not None
        flags = modify_flags(dom)
        name = dom.name()
        original = plan.interface.xml
        restore = LateRemoval(name, plan.alias, with_mac(original, plan.current_mac or plan.expected_mac), flags)
        # An unplug request of an earlier reattach may still be pending in the guest: QEMU refuses
        # a second one, and the guard must outlive that refusal (see _put_back).
        earlier = self.removals.pending(name, plan.alias)
        self.removals.expect(name, plan.alias)
        # Until the NIC is confirmed back, it is unsettled: should libvirt die under us (even
        # inside the detach call), the original is attached again once it is back.
        self._mark(restore, unsettled=True)
        log.info("detaching %s (MAC %s) to attach it with %s", plan.alias, plan.current_mac, plan.expected_mac)
        # From here on the guest may have lost the NIC: every failure puts it back.
        try:
            with_job_retry(dom.detachDeviceFlags, original, flags, what=f"{plan.alias} detach")
            gone = self.removals.wait(name, plan.alias, self.settings.detach_timeout_s)
            if not gone and self._present(dom, plan.alias):
                return self._not_released(dom, plan, restore)
            with_job_retry(
                dom.attachDeviceFlags, with_mac(original, plan.expected_mac), flags, what=f"{plan.alias} attach"
            )
        except Exception as exc:
            if self._attached_by_another(dom, plan):
                # KubeVirt's reconcile attaches a Multus NIC it finds missing (docs/kubevirt-facts.md
                # R3), with the spec's MAC or the target pod's: when that is the MAC we wanted, the
                # guest has what the reattach was for, and the closed loop checks the rest.
                log.warning("%s was attached again by another client with %s before us", plan.alias, plan.expected_mac)
                self._mark(restore, unsettled=False)
                return plan.record(result="done", new_mac=plan.expected_mac)
            return self._put_back(dom, plan, restore, error=_error_text(exc), earlier=earlier)
        self._mark(restore, unsettled=False)
        return plan.record(result="done", new_mac=plan.expected_mac)

    def _attached_by_another(self, dom: Domain, plan: InterfacePlan) -> bool:
        """After our detach: the NIC is back in the live domain with the MAC we meant to give it."""
        try:
            live = [i for i in parse_interfaces(dom.XMLDesc(0)) if i.alias == plan.alias]
        except Exception:
            return False
        return bool(live) and live[0].mac == plan.expected_mac and not self.removals.pending(dom.name(), plan.alias)

    def _not_released(self, dom: Domain, plan: InterfacePlan, restore: LateRemoval) -> InterfaceFixup:
        """The guest has not released the device; it still has its NIC, so stop here, but the
        unplug request is still pending in the guest: if it completes later, the original NIC is
        attached again (see DeviceRemovals)."""
        self.removals.guard(restore)
        self._mark(restore, unsettled=False)
        # libvirt took the NIC out of the persistent definition when it accepted the
        # (asynchronous) detach; the guest still has it, so the definition must too.
        if self._attach_missing(dom, restore):
            log.warning("%s put back into the persistent definition", plan.alias)
        timeout = self.settings.detach_timeout_s
        log.error("guest did not release %s within %ss; guarding it", plan.alias, timeout)
        return plan.record(
            result="failed",
            new_mac=plan.current_mac,
            error=f"guest did not release {plan.alias} within {timeout}s"
            " (it will be re-attached if the guest releases it later)",
        )

    def _put_back(
        self, dom: Domain, plan: InterfacePlan, restore: LateRemoval, *, error: str, earlier: LateRemoval | None
    ) -> InterfaceFixup:
        """A step of the reattach failed: attach the original NIC where it is missing."""
        log.error("reattach of %s failed after detach (%s); attaching the original back", plan.alias, error)
        try:
            self._attach_missing(dom, restore)
        except Exception as restore_exc:
            log.critical(
                "could not put %s back now (%s); it is attached again once libvirt answers", plan.alias, restore_exc
            )
            return plan.record(
                result="failed",
                new_mac=None,
                error=f"{error}; restoring the original NIC failed too: {_error_text(restore_exc)}"
                " (retried when libvirt is back)",
            )
        self._mark(restore, unsettled=False)
        if earlier is not None and self._present(dom, plan.alias):
            # The guest still holds the NIC and may yet honour the earlier unplug request.
            self.removals.guard(earlier)
        return plan.record(result="restored", new_mac=plan.current_mac, error=error)
