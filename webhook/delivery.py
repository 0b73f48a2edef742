"""Which delivery a VMI gets, and what the record of it on the VMI says (pure).

``--delivery auto`` resolves per admission from KubeVirt's Sidecar gate: a hook sidecar when the
gate is on, our own container in the launcher pod when it is off or could not be read (inject
needs no gate, so an unknown gate costs nothing). The choice is written on the VMI as
``<prefix>delivery`` for inject and node; virt-controller copies it to every launcher pod of the
VMI (docs/kubevirt-facts.md L2), so the pod webhook and the migration validator read the VMI's own
record, not the webhook's setting of the day.
"""

from __future__ import annotations

from collections.abc import Mapping

from bridge_migration_contract import AnnotationKeys, Delivery
from webhook.config import DeliveryMode


def resolve_delivery(mode: DeliveryMode, *, sidecar_gate_on: bool | None) -> Delivery:
    if mode == "auto":
        return "hook" if sidecar_gate_on is True else "inject"
    return mode


def recorded_delivery(annotations: Mapping[str, object], keys: AnnotationKeys) -> Delivery | None:
    """``inject`` or ``node`` when the VMI (or its pod) carries that record; None otherwise."""
    raw = annotations.get(keys.delivery)
    value = raw.strip() if isinstance(raw, str) else None
    if value == "inject":
        return "inject"
    if value == "node":
        return "node"
    return None
