"""Mutating a VirtualMachine: the VMI mutation, applied to `spec.template` (pure, no I/O).

virt-controller creates each VM's VMI from `spec.template`, with the VM's name. A MAC pinned only on
the VMI would make the VM and its VMI disagree, and KubeVirt (v1.7+, `pkg/network/vmliveupdate`)
reports `RestartRequired` when a running VMI's interfaces differ from the template's. So the pin,
the allow annotation, our sidecar entry and the `macs` record go into the template: the VMI arrives
complete and its own admission changes nothing. The MAC is seeded with the VM's name, which is
the VMI's, so it is the same MAC a standalone VMI of that name would get.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from webhook.config import WebhookConfig
from webhook.decision import WARN_PREFIX, Decision, PatchOp
from webhook.delivery import KubeVirtGates
from webhook.vmi_mutation import NOTHING_READ, mutate_vmi

TEMPLATE = "/spec/template"


def mutate_vm(
    vm: Mapping[str, Any],
    *,
    namespace: str,
    config: WebhookConfig,
    sidecar_gate_on: bool | None,
    kubevirt: KubeVirtGates = NOTHING_READ,
    fallback_name: str = "",
) -> Decision:
    """Decide the patch for a VM being created or updated (idempotent: an applied decision
    admitted again gives no patch). ``fallback_name`` (the request's uid) seeds pinned MACs when
    the VM has no name yet (generateName): its VMIs keep the template's MAC whatever their name."""
    spec = vm.get("spec")
    template = spec.get("template") if isinstance(spec, Mapping) else None
    if not isinstance(template, Mapping) or not isinstance(template.get("spec"), Mapping):
        return Decision()
    metadata = vm.get("metadata") or {}
    template_meta = template.get("metadata")
    annotations = template_meta.get("annotations") if isinstance(template_meta, Mapping) else None
    if annotations is not None and (
        not isinstance(annotations, Mapping) or not all(isinstance(v, str) for v in annotations.values())
    ):
        return Decision(
            warnings=[f"{WARN_PREFIX}spec.template.metadata.annotations must be strings; VM left unchanged"]
        )
    name = metadata.get("name") or ""
    # The template as the VMI virt-controller will make from it.
    as_vmi: dict[str, Any] = {
        "metadata": {"name": name, "namespace": namespace, **({"annotations": annotations} if annotations else {})},
        "spec": template["spec"],
    }
    decision = mutate_vmi(
        as_vmi,
        namespace=namespace,
        config=config,
        sidecar_gate_on=sidecar_gate_on,
        kubevirt=kubevirt,
        fallback_name=fallback_name,
    )
    decision.warnings = [w.replace(f"VMI {namespace}/", f"VM {namespace}/") for w in decision.warnings]
    if not decision.patch:
        return decision
    ops: list[PatchOp] = []
    if not isinstance(template_meta, Mapping):
        ops.append({"op": "add", "path": f"{TEMPLATE}/metadata", "value": {}})
    for op in decision.patch:
        ops.append({**op, "path": TEMPLATE + op["path"]})
    decision.patch = ops
    return decision
