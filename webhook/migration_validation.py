"""Validating a VirtualMachineInstanceMigration at CREATE: the pure decision.

A VMI with bridge/macvtap interfaces we look after and no fixer of ours (no hook sidecar entry,
no ``<prefix>delivery`` record of inject or node) was created before this add-on was installed
(or while the Sidecar gate was off under ``--delivery hook``). If it moves, the guest keeps its
stale IP on the target: warn about it, or refuse in strict mode, and say how to fix it.
Migrations KubeVirt starts itself (node drains, workload updates) are never refused: a refusal
would hold the drain forever.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge_migration_contract import HOOK_SIDECARS, vmi_managed_interfaces
from webhook.config import WebhookConfig
from webhook.decision import WARN_PREFIX, Decision
from webhook.delivery import recorded_delivery
from webhook.hook_sidecars import MalformedSidecarsError, has_our_sidecar, parse_sidecars

# Annotations virt-controller puts on the migrations it creates itself (docs/kubevirt-facts.md K4).
KUBEVIRT_INITIATED = {
    "kubevirt.io/evacuationMigration": "KubeVirt started it to evacuate a node (drain)",
    "kubevirt.io/workloadUpdateMigration": "KubeVirt started it to update the VM's launcher",
}


def validate_migration(
    migration: Mapping[str, Any],
    vmi: Mapping[str, Any],
    *,
    namespace: str,
    config: WebhookConfig,
) -> Decision:
    """Decide on a migration of ``vmi`` (already read from the API)."""
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
    raw = vmi_ann.get(HOOK_SIDECARS)
    try:
        ours = has_our_sidecar(parse_sidecars(raw if isinstance(raw, str) else None), config.sidecar_image)
    except MalformedSidecarsError:
        ours = False
    # Injected and node delivery: the record is there only where the webhook made the VMI migratable.
    if ours or recorded_delivery(vmi_ann, keys) is not None:
        return Decision()

    problem = (
        f"VMI {namespace}/{name} has bridge/macvtap interfaces ({names}) but no bridge-migration sidecar, "
        "so its guest would keep a stale IP after the move. Restart the VM so the webhook can add the "
        f"sidecar, or annotate the migration {keys.force}=true to migrate anyway."
    )
    mig_ann = (migration.get("metadata") or {}).get("annotations") or {}
    forced = str(mig_ann.get(keys.force, "")).strip().lower() == "true"
    started_by = next((why for key, why in KUBEVIRT_INITIATED.items() if key in mig_ann), None)
    if started_by is not None:
        # A refusal would hold a node drain or a KubeVirt update forever (virt-controller creates
        # the migration again and again); a stale IP after the move is the lesser harm.
        return Decision(warnings=[f"{WARN_PREFIX}{problem} Admitted even in strict mode: {started_by}."])
    if config.validation == "strict" and not forced:
        return Decision.deny(f"{WARN_PREFIX}{problem}")
    return Decision(warnings=[f"{WARN_PREFIX}{problem}"])
