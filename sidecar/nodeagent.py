"""The node agent's logic: from virt-handler's VMI to the target pod's libvirt, then the fixup.

KubeVirt v1.9's virt-handler calls `ExecuteNodeHook("PostMigrationTarget", vmi, node)` on the
target node once the guest runs there, and before it marks the migration completed
(docs/kubevirt-facts.md P4-P6). One agent per node serves every VM of that node, so nothing
runs per VM. From the VMI the agent finds the target launcher pod (the `status.activePods`
entry on this node), reaches that pod's virtqemud through the kubelet's directory of the pod's
`libvirt-runtime` emptyDir (P8), and runs the sidecar's own fixup engine on domain
`<namespace>_<name>`.

Two rules shape it. It never holds a migration: every call is answered within a deadline,
successfully, whatever the fixup did (the outcome is logged and sent as trailing metadata);
a fixup still running at the deadline goes on in the background, because cutting a reattach
short could leave the guest without its NIC. And it is idempotent: virt-handler may call again
for the same migration (a retry, a resync); the migration's UID keys the runs, and a second
call waits for the first run or reports it, never flaps the NIC again.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from bridge_migration_contract import managed_interfaces
from sidecar.config import NodeAgentSettings
from sidecar.domain import DomainState
from sidecar.engine import Fixer
from sidecar.errors import DomainNotRunningError, LibvirtUnavailableError
from sidecar.events import EventType, LifecycleEvent, ResumedDetail
from sidecar.executor import Executor, ExecutorSettings
from sidecar.metrics import Metrics
from sidecar.models import FixupRecord
from sidecar.removals import DeviceRemovals
from sidecar.watcher import LibvirtWatcher

log = logging.getLogger(__name__)

HOOK_POINT: Final = "PostMigrationTarget"
# The launcher's libvirt-runtime emptyDir as the kubelet lays it out (facts P8, L4).
SOCKET_IN_POD: Final = "volumes/kubernetes.io~empty-dir/libvirt-runtime/virtqemud-sock"
# sun_path holds 108 bytes with the terminating NUL.
MAX_SOCKET_PATH: Final = 107
# Runs remembered for idempotency; a node rarely receives this many migrations within the time
# virt-handler might still call again for one.
MAX_RUNS: Final = 1024
CONNECT_MARGIN_S: Final = 0.5
PAUSED_POLL_S: Final = 5.0  # how often a paused domain's watch checks that its pod still exists

AgentResult = Literal["success", "failed", "noop", "skipped", "running", "deferred", "error"]


class HookError(Exception):
    """The request cannot be acted on (malformed, or names nothing here); answered, not raised."""


class NotForUs(Exception):  # noqa: N818 - a reason to do nothing, not a failure
    """A well-formed call with nothing to do here (another hook point, no NIC of ours)."""


@dataclass(frozen=True)
class Outcome:
    """What one ExecuteNodeHook call did: also sent back as trailing metadata."""

    result: AgentResult
    message: str
    migration_uid: str | None = None
    domain: str | None = None
    record: FixupRecord | None = None

    def metadata(self) -> dict[str, str]:
        def ascii_line(text: str) -> str:
            return " ".join(text.split()).encode("ascii", "replace").decode()[:1000]

        out = {"bridge-migration-result": self.result, "bridge-migration-message": ascii_line(self.message)}
        if self.migration_uid:
            out["bridge-migration-migration-uid"] = ascii_line(self.migration_uid)
        return out


@dataclass(frozen=True)
class TargetPod:
    """The migration target as this node sees it."""

    namespace: str
    name: str
    domain: str
    migration_uid: str
    pod_uid: str
    pod_name: str | None
    socket: Path
    interfaces: tuple[str, ...]  # VMI interfaces we look after


def parse_vmi(raw: bytes) -> dict[str, Any]:
    try:
        vmi = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise HookError(f"the VMI is not JSON: {exc}") from exc
    if not isinstance(vmi, dict):
        raise HookError("the VMI is not a JSON object")
    return vmi


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, Mapping) else None
    return obj


def locate_target(vmi: Mapping[str, Any], *, node_name: str, kubelet_pods: Path) -> TargetPod:
    """The target launcher pod of the VMI's current migration, on this node.

    Raises NotForUs when there is nothing of ours to do, HookError when the VMI does not say
    enough to act safely."""
    name, namespace = _get(vmi, "metadata", "name"), _get(vmi, "metadata", "namespace")
    if not isinstance(name, str) or not name or not isinstance(namespace, str) or not namespace:
        raise HookError("the VMI has no metadata.name or metadata.namespace")
    spec = vmi.get("spec")
    managed = managed_interfaces(spec) if isinstance(spec, Mapping) else []
    if not managed:
        raise NotForUs(f"{namespace}/{name} has no bridge or macvtap interface we look after")
    state = _get(vmi, "status", "migrationState")
    if not isinstance(state, Mapping):
        raise HookError(f"{namespace}/{name} has no status.migrationState")
    migration_uid = state.get("migrationUid")
    if not isinstance(migration_uid, str) or not migration_uid:
        raise HookError(f"{namespace}/{name}: status.migrationState.migrationUid is missing")
    target_node = state.get("targetNode")
    if isinstance(target_node, str) and target_node and target_node != node_name:
        raise NotForUs(f"{namespace}/{name} migrates to node {target_node}, this is {node_name}")
    active = _get(vmi, "status", "activePods")
    if not isinstance(active, Mapping):
        raise HookError(f"{namespace}/{name} has no status.activePods")
    here = sorted(uid for uid, node in active.items() if node == node_name and isinstance(uid, str) and uid)
    if "/" in "".join(here) or any(uid in (".", "..") for uid in here):
        raise HookError(f"{namespace}/{name}: a pod UID in status.activePods is not a plain name")
    # The source pod may still be listed (on another node); on this node, a pod without a
    # libvirt socket is not a running launcher (e.g. one left from an earlier failed attempt).
    candidates = [uid for uid in here if (kubelet_pods / uid / SOCKET_IN_POD).exists()]
    if not candidates:
        raise HookError(
            f"{namespace}/{name}: no launcher pod of status.activePods on {node_name} has a libvirt socket"
            f" under {kubelet_pods} (pods here: {', '.join(here) or 'none'})"
        )
    if len(candidates) > 1:
        raise HookError(f"{namespace}/{name}: several launcher pods on {node_name}: {', '.join(candidates)}")
    pod_uid = candidates[0]
    target_pod = state.get("targetPod")
    return TargetPod(
        namespace=namespace,
        name=name,
        domain=f"{namespace}_{name}",
        migration_uid=migration_uid,
        pod_uid=pod_uid,
        pod_name=target_pod if isinstance(target_pod, str) else None,
        socket=kubelet_pods / pod_uid / SOCKET_IN_POD,
        interfaces=tuple(m["name"] for m in managed),
    )


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
    only: list[str] | None = None,
) -> FixupRecord:
    """Connect to the target pod's libvirt, run one fixup with the sidecar's engine, disconnect.

    The engine runs as in the sidecar, with what the node has instead of the pod's: the VMI's own
    annotations (our `macs`, `mac-policy`, `nic-refresh` keys; virt-controller copies them to the
    pod, so they are the same) and no pod links. That is enough from KubeVirt v1.9 on, whose DHCP
    server answers the spec MAC, else the VMI status MAC (facts D2), never the pod link's; the
    Plugin API exists only from v1.9 (P1), so the v1.9 rule is the fallback."""
    removals = DeviceRemovals()
    resources = contextlib.ExitStack()
    socket = resources.enter_context(reachable_socket(target.socket))
    unpaused = threading.Event()

    def on_lifecycle(ev: LifecycleEvent) -> None:  # libvirt's event thread: record only
        if (ev.event, ev.detail) == (EventType.RESUMED, ResumedDetail.UNPAUSED):
            unpaused.set()

    watcher = LibvirtWatcher(
        uri=settings.libvirt_uri_template.format(socket=socket),
        domain_name=target.domain,
        on_lifecycle=on_lifecycle,
        removals=removals,
        max_backoff=1.0,
    )
    resources.callback(watcher.stop)  # runs before the socket's descriptor is closed
    watcher.start()
    handed_over = False
    try:
        # Retried until just before the call's deadline, so that a launcher that cannot be
        # reached is reported as such in the answer rather than as "still running".
        if not watcher.connected_once.wait(max(0.1, deadline - CONNECT_MARGIN_S - time.monotonic())):
            why = watcher.last_error or "no answer"
            raise LibvirtUnavailableError(f"cannot reach libvirt at {target.socket}: {why}")
        fixer = Fixer(
            executor=Executor(
                ExecutorSettings(
                    link_pause_s=settings.link_pause_ms / 1000,
                    resume_settle_s=settings.resume_settle_ms / 1000,
                    detach_timeout_s=settings.detach_timeout,
                ),
                removals,
            ),
            domain=watcher.domain,
            vmi=lambda: vmi,
            annotations_file=None,
            keys=settings.keys,
            links=dict,
            metrics=Metrics(),
            kubevirt_family="v1.9+",
        )
        try:
            return fixer.run(trigger="node-hook", interfaces=only)
        except DomainNotRunningError:
            if watcher.domain().state()[0] != DomainState.PAUSED:
                raise
        # KubeVirt migrates a paused VMI paused: the guest runs again only when the user
        # unpauses it, and no node hook says when. Keep this connection and fix it then.
        threading.Thread(
            target=_fix_on_unpause,
            args=(target, fixer, unpaused, resources, only),
            name=f"paused-{target.domain}",
            daemon=True,
        ).start()
        handed_over = True
        raise DeferredFixupError(f"domain {target.domain} arrived paused: its NICs are fixed when it is unpaused")
    finally:
        if not handed_over:
            resources.close()


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
            record = fixer.run(trigger="unpaused-after-migration", interfaces=only)
            log.info("fixup of %s after its unpause: %s (%s)", target.domain, record.result, record.message)
        except Exception as exc:
            log.warning("fixup of %s after its unpause failed: %s", target.domain, exc)


@dataclass
class _Run:
    """One fixup of one migration, on its own thread."""

    target: TargetPod
    only: list[str] | None = None  # after a failed run: the interfaces it did not fix
    done: threading.Event = field(default_factory=threading.Event)
    outcome: Outcome | None = None


_RESULTS: Final[dict[str, AgentResult]] = {"success": "success", "noop": "noop", "disabled": "skipped"}


def _fixed_by(outcome: Outcome | None) -> set[str]:
    record = outcome.record if outcome is not None else None
    return {i.name for i in record.interfaces if i.result in ("done", "skipped")} if record else set()


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
        log.log(
            level,
            "ExecuteNodeHook %s %s: %s (%s) in %.0f ms",
            hook_point,
            outcome.domain or "-",
            outcome.result,
            outcome.message,
            (time.monotonic() - started) * 1000,
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
        run, fresh = self._run_for(target, vmi, deadline)
        run.done.wait(max(0.0, deadline - time.monotonic()))
        outcome = run.outcome
        if outcome is None:
            return Outcome(
                result="running",
                message="the fixup is still running; it goes on after this answer",
                migration_uid=target.migration_uid,
                domain=target.domain,
            )
        if not fresh and outcome.result in ("success", "noop", "deferred"):
            return Outcome(
                result="noop",
                message=f"already handled for this migration ({outcome.result}: {outcome.message})",
                migration_uid=target.migration_uid,
                domain=target.domain,
                record=outcome.record,
            )
        return outcome

    def _run_for(self, target: TargetPod, vmi: Mapping[str, Any], deadline: float) -> tuple[_Run, bool]:
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
            run = _Run(target, only=only)
            self._runs[target.migration_uid] = run
            self._runs.move_to_end(target.migration_uid)
            while len(self._runs) > MAX_RUNS:
                self._runs.popitem(last=False)
        threading.Thread(target=self._fix, args=(run, vmi, deadline), name=f"fix-{target.domain}", daemon=True).start()
        return run, True

    def _fix(self, run: _Run, vmi: Mapping[str, Any], deadline: float) -> None:
        target = run.target
        try:
            record = fix_target(target, vmi, self.settings, deadline=deadline, only=run.only)
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
