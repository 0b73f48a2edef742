"""Which delivery a VMI gets, and what the record of it on the VMI says (pure).

``--delivery auto`` resolves per admission from KubeVirt's Sidecar gate: a hook sidecar when the
gate is on, our own container in the launcher pod when it is off or could not be read (inject
needs no gate, so an unknown gate costs nothing). The choice is written on the VMI as
``<prefix>delivery`` for inject and node; virt-controller copies it to every launcher pod of the
VMI (docs/kubevirt-facts.md L2), so the pod webhook and the migration validator read the VMI's own
record, not the webhook's setting of the day.

A delivery is chosen only where its fixer will act (``missing_fixer``): node delivery needs a
node agent and KubeVirt v1.9+ with the Plugins gate, inject a non-root launcher (the Root gate off).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bridge_migration_contract import AnnotationKeys, Delivery, DeliveryChoice, kubevirt_family, parse_delivery


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


# KubeVirt's mark of a non-root VMI from before NonRoot was the default; virt-launcher runs
# non-root for a VMI carrying it whatever the Root gate says (docs/kubevirt-facts.md L11).
NONROOT_ANNOTATION = "kubevirt.io/nonroot"


@dataclass(frozen=True)
class KubeVirtGates:
    """What the webhook knows of KubeVirt at an admission, from the KubeVirt CR (None: never read,
    which counts as off: both gates are Alpha, off unless listed)."""

    plugins: bool | None = None
    root: bool | None = None
    version: str | None = None  # status.observedKubeVirtVersion, when it parses


@dataclass(frozen=True)
class NoFixer:
    """Why a delivery would put no fixer at work (``why``), and what the user can do (``fix``)."""

    why: str
    fix: str


def missing_fixer(
    delivery: Delivery, annotations: Mapping[str, object], *, node_agent: bool, kubevirt: KubeVirtGates
) -> NoFixer | None:
    """Why ``delivery`` would leave a VMI with ``annotations`` without a fixer that acts; None when
    one will act. Hook delivery's own condition, the Sidecar gate, is the mutator's (it decides
    whether the entry may be added at all)."""
    if delivery == "node":
        if not node_agent:
            return NoFixer(
                "no node agent is deployed (the webhook runs without --node-agent: the chart's node.enabled is off)",
                "Deploy the node agent (node.enabled=true) or choose delivery hook or inject, and recreate the VMI.",
            )
        if kubevirt.version is not None and kubevirt_family(kubevirt.version) != "v1.9+":
            return NoFixer(
                f"KubeVirt {kubevirt.version} has no node hooks (v1.9 and newer)",
                "Choose delivery hook or inject, and recreate the VMI.",
            )
        if kubevirt.plugins is not True:
            state = "is off" if kubevirt.plugins is False else "could not be read"
            return NoFixer(
                f"KubeVirt's Plugins feature gate {state}, and without it virt-handler calls no node hook",
                "Enable the gate, recreate the VMI.",
            )
    if delivery == "inject" and kubevirt.root is True and NONROOT_ANNOTATION not in annotations:
        return NoFixer(
            "KubeVirt's Root feature gate is on, so its virt-launcher pods run as root, where the injected fixer "
            "cannot work",
            "Choose delivery hook (KubeVirt's Sidecar gate) or node, and recreate the VMI.",
        )
    return None
