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

from bridge_migration_contract import AnnotationKeys, Delivery, DeliveryChoice, parse_delivery


def resolve_delivery(mode: DeliveryChoice, *, sidecar_gate_on: bool | None) -> Delivery:
    if mode == "auto":
        return "hook" if sidecar_gate_on is True else "inject"
    return mode


def recorded_delivery(annotations: Mapping[str, object], keys: AnnotationKeys) -> Delivery | None:
    """``inject`` or ``node`` when the VMI (or its pod) carries that record; None otherwise.

    ``hook`` is never recorded (a hook VMI carries our hookSidecars entry instead), so a ``hook``
    written there by hand says no more than its absence: None too."""
    delivery = parse_delivery(annotations.get(keys.delivery))
    return None if delivery == "hook" else delivery
