"""The node agent's pure half: from the VMI virt-handler sends to the target launcher pod on this node.

KubeVirt v1.9's virt-handler calls `ExecuteNodeHook("PostMigrationTarget", vmi, node)` on the
target node once the guest runs there, and before it marks the migration completed
(docs/kubevirt-facts.md P4-P6). From the VMI the agent finds the target launcher pod (the
`status.activePods` entry on this node) and that pod's virtqemud socket in the kubelet's
directory of the pod's `libvirt-runtime` emptyDir (P8). Nothing here connects anywhere; the one
look at the file system is whether a candidate pod has that socket.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

from bridge_migration_contract import managed_interfaces
from sidecar.core.models import FixupRecord

HOOK_POINT: Final = "PostMigrationTarget"
# The launcher's libvirt-runtime emptyDir as the kubelet lays it out (facts P8, L4).
SOCKET_IN_POD: Final = "volumes/kubernetes.io~empty-dir/libvirt-runtime/virtqemud-sock"

AgentResult = Literal["verified", "unverified", "failed", "noop", "skipped", "running", "deferred", "error"]


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
    # When the migration ended, from status.migrationState.endTimestamp (None when absent): the
    # latest the guest can have resumed here, so a hold counting from it is never too short.
    ended_by: float | None = None

    def resumed_at(self, called_at: float) -> float:
        """When the guest resumed here, as well as the call tells: the migration's end, and no
        later than the call itself (virt-handler calls once the guest runs here, facts P6)."""
        return called_at if self.ended_by is None else min(called_at, self.ended_by)


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


def _latest_instant(value: object) -> float | None:
    """The latest instant an RFC 3339 timestamp can stand for: Kubernetes writes `metav1.Time`
    with whole seconds, so ``12:00:05Z`` is any time up to 12:00:06. None when unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if at.tzinfo is None:
        return None
    return at.timestamp() + (1.0 if at.microsecond == 0 else 0.0)


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
        ended_by=_latest_instant(state.get("endTimestamp")),
    )
