"""Validating a VirtualMachineInstanceMigration at CREATE: the pure decision.

A VMI with bridge/macvtap interfaces we look after and no fixer of ours (no hook sidecar entry,
no ``<prefix>delivery`` record of inject or node) was created before this add-on was installed
(or while the Sidecar gate was off under ``--delivery hook``). If it moves, the guest keeps its
stale IP on the target: warn about it, or refuse in strict mode, and say how to fix it.
A record of inject or node counts only where that fixer would act (webhook/delivery.py).
Migrations KubeVirt starts itself (node drains, workload updates) are never refused: a refusal
would hold the drain forever; the webhook admits them before reading anything (``kubevirt_initiated``).

A macvtap interface (the binding plugin on a Multus network) with a MAC in the spec needs no fixer:
the target pod's macvtap device carries that MAC and the guest's address stays valid (facts V6).
Without one the target's device carries another MAC than the guest's: a fixer that reads the pod's
links re-attaches the NIC with the device's MAC (a warning says the guest's MAC changes); with no
such fixer (none at all, or only the node agent, which cannot read them) the move strands it,
like a bridge NIC without a fixer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge_migration_contract import HOOK_SIDECARS, ManagedInterface, vmi_managed_interfaces
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


def _has_our_sidecar(vmi_ann: Mapping[str, Any], config: WebhookConfig) -> bool:
    raw = vmi_ann.get(HOOK_SIDECARS)
    try:
        return has_our_sidecar(parse_sidecars(raw if isinstance(raw, str) else None), config.sidecar_image)
    except MalformedSidecarsError:
        return False


def _fixer_problem(
    vmi_ann: Mapping[str, Any], *, who: str, names: str, config: WebhookConfig, kubevirt: KubeVirtGates
) -> str | None:
    """What keeps a fixer of ours from acting on this VMI after a move; None when one will."""
    keys = config.keys
    if _has_our_sidecar(vmi_ann, config):
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


def _unpinned_macvtap_text(names: str, *, fixed: bool) -> str:
    head = (
        f"macvtap interfaces {names} have no macAddress in the spec, so the target pod's macvtap device will "
        "carry another MAC than the guest's"
    )
    if fixed:
        return (
            f"{head}: the fixer re-attaches them with the device's MAC, so the guest's MAC changes and it may get "
            "another address. Pin a macAddress in the spec (recreate the VM) to keep both."
        )
    return f"{head}, and frames to the guest would not be delivered there."


def _macvtap_verdict(
    problem: str | None,
    unpinned: list[ManagedInterface],
    vmi_ann: Mapping[str, Any],
    *,
    who: str,
    config: WebhookConfig,
) -> tuple[str | None, list[str]]:
    """The problem and the warnings once the macvtap interfaces without a spec MAC are counted."""
    if not unpinned:
        return problem, []
    names = ", ".join(i["name"] for i in unpinned)
    if problem is not None:
        return f"{problem} Its {_unpinned_macvtap_text(names, fixed=False)}", []
    if not _has_our_sidecar(vmi_ann, config) and recorded_delivery(vmi_ann, config.keys) == "node":
        # The node agent runs outside the pod and cannot read which MAC the target's device carries.
        return (
            f"{who}: its {_unpinned_macvtap_text(names, fixed=False)} The node agent cannot read the target pod's "
            f"links to fix that. Annotate the migration {config.keys.force}=true to migrate anyway.",
            [],
        )
    return None, [f"{WARN_PREFIX}{who}: its {_unpinned_macvtap_text(names, fixed=True)}"]


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
    # A macvtap interface with a spec MAC needs nothing from us on the target (facts V6).
    needy = [i for i in managed if i["binding"] == "bridge" or i["mac"] is None]
    if not needy:
        return Decision()
    problem = _fixer_problem(
        vmi_ann, who=who, names=", ".join(i["name"] for i in needy), config=config, kubevirt=kubevirt
    )
    unpinned = [i for i in needy if i["binding"] == "macvtap"]
    problem, notes = _macvtap_verdict(problem, unpinned, vmi_ann, who=who, config=config)
    if problem is None:
        return Decision(warnings=notes)
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
