"""Which fixer serves a VMI, for `status` and `fixup` (pure): the container to ``kubectl exec`` into.

The per-VM fixer answers ``python -m sidecar status|fixup`` in its own container: ``bridge-migration``
(delivery inject) or the hook sidecar running the fixer's command (delivery hook). The node agent
(delivery node) serves no such command for one VMI: ``python -m sidecar`` has no ``--vmi`` for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bridge_migration_contract import DEFAULT_KEYS, AnnotationKeys
from kubectl_bridge_migration.analysis import (
    NODE_AGENT_CONTAINER,
    annotations_of,
    delivery_of,
    fixer_container,
    launcher_pods,
    meta_of,
    node_agent_on,
    vmi_node,
)

SIDECAR = ("python", "-m", "sidecar")


@dataclass(frozen=True)
class ExecTarget:
    namespace: str
    pod: str
    container: str
    delivery: str


@dataclass(frozen=True)
class NoTarget:
    """Why no fixer can be reached, and the exit code to leave with (2: not possible from here)."""

    why: str
    code: int = 2


def find_fixer(
    vmi: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    agents: Sequence[Mapping[str, Any]],
    keys: AnnotationKeys = DEFAULT_KEYS,
) -> ExecTarget | NoTarget:
    meta = meta_of(vmi)
    who = f"{meta.get('namespace')}/{meta.get('name')}"
    delivery = delivery_of(annotations_of(vmi), keys)
    node = vmi_node(vmi)
    if delivery == "node":
        agent = node_agent_on(node, agents)
        where = (
            f"node agent {meta_of(agent).get('namespace')}/{meta_of(agent).get('name')}"
            if agent
            else "no Ready node agent"
        )
        return NoTarget(
            f"{who} is served by the node agent on {node or '(no node)'} ({where}), and `python -m sidecar` has no "
            "per-VMI status or fixup for the node agent (no `fixup --vmi NS/NAME`): see its log instead "
            f"(kubectl logs -n <release namespace> <agent pod> -c {NODE_AGENT_CONTAINER})"
        )
    launchers = launcher_pods(vmi, pods)
    if not launchers:
        return NoTarget(f"{who} has no launcher pod (is it running?)")
    # The pod on the VMI's node is the one in charge; a migration target elsewhere comes after it.
    launchers.sort(key=lambda p: (p.get("spec") or {}).get("nodeName") != node)
    for pod in launchers:
        found = fixer_container(pod)
        if found is not None:
            pmeta = meta_of(pod)
            return ExecTarget(str(pmeta.get("namespace")), str(pmeta.get("name")), found[1], found[0])
    names = ", ".join(str(meta_of(p).get("name")) for p in launchers)
    return NoTarget(
        f"{who}: no fixer container of ours in its launcher pod ({names}); delivery {delivery or 'none recorded'}"
    )


def exec_argv(kubectl: str, passthrough: Sequence[str], target: ExecTarget, subcommand: Sequence[str]) -> list[str]:
    """``kubectl [--kubeconfig/--context] exec -n NS POD -c CONTAINER -- python -m sidecar ...``."""
    return [
        kubectl,
        *passthrough,
        "exec",
        "-n",
        target.namespace,
        target.pod,
        "-c",
        target.container,
        "--",
        *SIDECAR,
        *subcommand,
    ]
