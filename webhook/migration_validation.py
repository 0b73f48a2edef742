"""Validating a VirtualMachineInstanceMigration at CREATE: the pure decision.

A VMI with bridge/macvtap interfaces we look after and no fixer of ours (no hook sidecar entry,
no ``<prefix>delivery`` record of inject or node) was created before this add-on was installed
(or while the Sidecar gate was off under ``--delivery hook``). If it moves, the guest keeps its
stale IP on the target: warn about it, or refuse in strict mode, and say how to fix it.
A record of inject or node counts only where that fixer would act (webhook/delivery.py).
Migrations KubeVirt starts itself (node drains, workload updates) are never refused: a refusal
would hold the drain forever; the webhook admits them before reading anything (``kubevirt_initiated``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge_migration_contract import HOOK_SIDECARS, vmi_managed_interfaces
from webhook.config import WebhookConfig
from webhook.decision import WARN_PREFIX, Decision
from webhook.delivery import KubeVirtGates, missing_fixer, recorded_delivery
from webhook.hook_sidecars import MalformedSidecarsError, has_our_sidecar, parse_sidecars

NOTHING_READ = KubeVirtGates()

# Annotations virt-controller puts on the migrations it creates itself (docs/kubevirt-facts.md K4).
KUBEVIRT_INITIATED = {
    "kubevirt.io/evacuationMigration": "KubeVirt started it to evacuate a node (drain)",
    "kubevirt.io/workloadUpdateMigration": "KubeVirt started it to update the VM's launcher",
}


def kubevirt_initiated(migration: Mapping[str, Any]) -> str | None:
    """Why KubeVirt created this migration itself (a drain, a workload update), read from its
    annotations alone; None for any other migration. Decided before any read of the API, so an
    API that fails or hangs never refuses one, even in strict mode (docs/kubevirt-facts.md K4)."""
    annotations = (migration.get("metadata") or {}).get("annotations") or {}
    return next((why for key, why in KUBEVIRT_INITIATED.items() if key in annotations), None)


def _fixer_problem(
    vmi_ann: Mapping[str, Any], *, who: str, names: str, config: WebhookConfig, kubevirt: KubeVirtGates
) -> str | None:
    """What keeps a fixer of ours from acting on this VMI after a move; None when one will."""
    keys = config.keys
    raw = vmi_ann.get(HOOK_SIDECARS)
    try:
        ours = has_our_sidecar(parse_sidecars(raw if isinstance(raw, str) else None), config.sidecar_image)
    except MalformedSidecarsError:
        ours = False
    if ours:
        return None
    recorded = recorded_delivery(vmi_ann, keys)
    if recorded is None:
        return (
            f"{who} has bridge/macvtap interfaces ({names}) but no bridge-migration sidecar, "
            "so its guest would keep a stale IP after the move. Restart the VM so the webhook can add the "
            f"sidecar, or annotate the migration {keys.force}=true to migrate anyway."
        )
    # The webhook records inject or node only where that fixer acts, but a user can write the
    # record too, and a gate can change after the VMI started.
    missing = missing_fixer(recorded, vmi_ann, node_agent=config.node_agent, kubevirt=kubevirt)
    if missing is None:
        return None
    return (
        f"{who} records delivery {recorded}, but {missing.why}, so its guest would keep a stale IP on "
        f"interfaces {names} after the move. Annotate the migration {keys.force}=true to migrate anyway."
    )


def validate_migration(
    migration: Mapping[str, Any],
    vmi: Mapping[str, Any],
    *,
    namespace: str,
    config: WebhookConfig,
    kubevirt: KubeVirtGates = NOTHING_READ,
) -> Decision:
    """Decide on a migration of ``vmi`` (already read from the API); ``kubevirt`` says whether an
    inject or node record's fixer would act."""
    keys = config.keys
    vmi_meta = vmi.get("metadata") or {}
    vmi_ann: Mapping[str, Any] = vmi_meta.get("annotations") or {}
    name = vmi_meta.get("name", "?")
    managed = vmi_managed_interfaces(vmi, keys)
    if not managed:
        return Decision()
    names = ", ".join(i["name"] for i in managed)
    if str(vmi_ann.get(keys.enabled, "")).strip().lower() == "false":
        return Decision(
            warnings=[
                f"{WARN_PREFIX}VMI {namespace}/{name} opted out ({keys.enabled}=false): "
                f"interfaces {names} will keep their old IP after this migration"
            ]
        )
    who = f"VMI {namespace}/{name}"
    problem = _fixer_problem(vmi_ann, who=who, names=names, config=config, kubevirt=kubevirt)
    if problem is None:
        return Decision()
    mig_ann = (migration.get("metadata") or {}).get("annotations") or {}
    forced = str(mig_ann.get(keys.force, "")).strip().lower() == "true"
    started_by = kubevirt_initiated(migration)
    if started_by is not None:
        # A refusal would hold a node drain or a KubeVirt update forever (virt-controller creates
        # the migration again and again); a stale IP after the move is the lesser harm. (The
        # webhook decides these before reading the VMI: orchestration.decide_migration.)
        return Decision(warnings=[f"{WARN_PREFIX}{problem} Admitted even in strict mode: {started_by}."])
    if config.validation == "strict" and not forced:
        return Decision.deny(f"{WARN_PREFIX}{problem}")
    return Decision(warnings=[f"{WARN_PREFIX}{problem}"])
