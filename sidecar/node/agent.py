"""The node agent: answers virt-handler's ExecuteNodeHook calls, one run per migration.

One agent per node serves every VM of that node, so nothing runs per VM. Two rules shape it. It
never holds a migration: every call is answered within a deadline, successfully, whatever the
fixup did (the outcome is logged and sent as trailing metadata); a fixup still running at the
deadline goes on in the background, because cutting a reattach short could leave the guest
without its NIC. And it is idempotent: virt-handler may call again for the same migration (a
retry, a resync); the migration's UID keys the runs, and a second call waits for the first run or
reports it, never flaps the NIC again.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from bridge_migration_contract import log_fields
from sidecar.node.fixup import DeferredFixupError, fix_target
from sidecar.node.settings import NodeAgentSettings
from sidecar.node.target import (
    HOOK_POINT,
    AgentResult,
    HookError,
    NotForUs,
    Outcome,
    TargetPod,
    locate_target,
    parse_vmi,
)

log = logging.getLogger(__name__)

# Runs remembered for idempotency; a node rarely receives this many migrations within the time
# virt-handler might still call again for one.
MAX_RUNS: Final = 1024


@dataclass
class _Run:
    """One fixup of one migration, on its own thread."""

    target: TargetPod
    resumed_at: float  # when the guest resumed here, as well as the call told (TargetPod.resumed_at)
    only: list[str] | None = None  # after a failed run: the interfaces it did not fix
    done: threading.Event = field(default_factory=threading.Event)
    outcome: Outcome | None = None


_RESULTS: Final[dict[str, AgentResult]] = {
    "verified": "verified",
    "unverified": "unverified",
    "noop": "noop",
    "disabled": "skipped",
}


def _fixed_by(outcome: Outcome | None) -> set[str]:
    record = outcome.record if outcome is not None else None
    if record is None:
        return set()
    return {
        i.name for i in record.interfaces if i.result in ("done", "skipped") and i.outcome not in ("failed", "stale")
    }


def _vmi_fields(raw_vmi: bytes) -> dict[str, str]:
    """The VMI a call is about, under KubeVirt's keys (kind, namespace, name, uid), for its log line;
    what cannot be read is left out (the call's answer says why)."""
    try:
        meta = parse_vmi(raw_vmi).get("metadata")
    except HookError:
        return {}
    if not isinstance(meta, Mapping):
        return {}
    found = {key: meta[key] for key in ("namespace", "name", "uid") if isinstance(meta.get(key), str)}
    return {"kind": "VirtualMachineInstance", **found} if found else {}


class NodeAgent:
    """Answers ExecuteNodeHook calls (thread-safe; each call blocks at most its budget)."""

    def __init__(self, settings: NodeAgentSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._runs: collections.OrderedDict[str, _Run] = collections.OrderedDict()

    def handle(self, *, hook_point: str, raw_vmi: bytes, node_name: str, budget: float) -> Outcome:
        started = time.monotonic()
        try:
            outcome = self._handle(hook_point, raw_vmi, node_name, started + budget)
        except NotForUs as exc:
            outcome = Outcome(result="skipped", message=str(exc))
        except HookError as exc:
            outcome = Outcome(result="error", message=str(exc))
        except Exception as exc:  # never let a bug turn into a failed hook call
            log.exception("ExecuteNodeHook %s failed unexpectedly", hook_point)
            outcome = Outcome(result="error", message=f"{type(exc).__name__}: {exc}")
        level = logging.WARNING if outcome.result in ("failed", "error") else logging.INFO
        fields = log_fields(
            **_vmi_fields(raw_vmi), hookPoint=hook_point, result=outcome.result, migration=outcome.migration_uid
        )
        log.log(
            level,
            "ExecuteNodeHook %s %s: %s (%s) in %.0f ms",
            hook_point,
            outcome.domain or "-",
            outcome.result,
            outcome.message,
            (time.monotonic() - started) * 1000,
            extra=fields,
        )
        return outcome

    def wait_idle(self, timeout: float) -> bool:
        """Wait for running fixups (before exiting: a reattach cut short would leave the guest
        without its NIC). True when none is left."""
        end = time.monotonic() + timeout
        with self._lock:
            running = [run for run in self._runs.values() if not run.done.is_set()]
        return all(run.done.wait(max(0.0, end - time.monotonic())) for run in running)

    def _node(self, caller_node: str) -> str:
        mine = self.settings.node_name
        if mine and caller_node and caller_node != mine:
            raise HookError(f"the call names node {caller_node!r}; this agent serves {mine!r}")
        node = mine or caller_node
        if not node:
            raise HookError("no node name: the call has no node_context and --node-name is unset")
        return node

    def _handle(self, hook_point: str, raw_vmi: bytes, caller_node: str, deadline: float) -> Outcome:
        if hook_point != HOOK_POINT:
            raise NotForUs(f"hook point {hook_point!r} is not ours (we serve {HOOK_POINT})")
        node = self._node(caller_node)
        vmi = parse_vmi(raw_vmi)
        target = locate_target(vmi, node_name=node, kubelet_pods=self.settings.kubelet_pods_dir)
        run, fresh = self._run_for(target, vmi, deadline, called_at=time.time())
        run.done.wait(max(0.0, deadline - time.monotonic()))
        outcome = run.outcome
        if outcome is None:
            return Outcome(
                result="running",
                message="the fixup is still running; it goes on after this answer",
                migration_uid=target.migration_uid,
                domain=target.domain,
            )
        if not fresh and outcome.result in ("verified", "unverified", "noop", "deferred"):
            return Outcome(
                result="noop",
                message=f"already handled for this migration ({outcome.result}: {outcome.message})",
                migration_uid=target.migration_uid,
                domain=target.domain,
                record=outcome.record,
            )
        return outcome

    def _run_for(
        self, target: TargetPod, vmi: Mapping[str, Any], deadline: float, *, called_at: float
    ) -> tuple[_Run, bool]:
        """The run of this migration: the existing one, unless it failed; then a new run for
        the interfaces the failed one did not fix (so none is flapped twice)."""
        with self._lock:
            run = self._runs.get(target.migration_uid)
            failed = run is not None and run.done.is_set() and getattr(run.outcome, "result", None) == "failed"
            if run is not None and not failed:
                return run, False
            only = None
            if run is not None:
                left = [name for name in target.interfaces if name not in _fixed_by(run.outcome)]
                only = left if left != list(target.interfaces) else None
            run = _Run(target, resumed_at=target.resumed_at(called_at), only=only)
            self._runs[target.migration_uid] = run
            self._runs.move_to_end(target.migration_uid)
            while len(self._runs) > MAX_RUNS:
                self._runs.popitem(last=False)
        threading.Thread(target=self._fix, args=(run, vmi, deadline), name=f"fix-{target.domain}", daemon=True).start()
        return run, True

    def _fix(self, run: _Run, vmi: Mapping[str, Any], deadline: float) -> None:
        target = run.target
        try:
            record = fix_target(target, vmi, self.settings, deadline=deadline, resumed_at=run.resumed_at, only=run.only)
            done = "; ".join(f"{i.name} {i.action} {i.result} {i.old_mac}->{i.new_mac}" for i in record.interfaces)
            run.outcome = Outcome(
                result=_RESULTS.get(record.result, "failed"),
                message=f"{record.message} ({done})" if done else record.message,
                migration_uid=target.migration_uid,
                domain=target.domain,
                record=record,
            )
        except DeferredFixupError as exc:
            run.outcome = Outcome(
                result="deferred", message=str(exc), migration_uid=target.migration_uid, domain=target.domain
            )
        except Exception as exc:
            log.warning("fixup of %s failed: %s", target.domain, exc)
            run.outcome = Outcome(
                result="failed",
                message=f"{type(exc).__name__}: {exc}",
                migration_uid=target.migration_uid,
                domain=target.domain,
            )
        finally:
            run.done.set()
            if run.outcome is not None and time.monotonic() > deadline:
                # The call was answered "running" already: this line is the only report.
                log.info("late fixup of %s: %s (%s)", target.domain, run.outcome.result, run.outcome.message)
