"""Mutating a VirtualMachine: the VMI mutation, applied to `spec.template` (pure, no I/O).

virt-controller creates each VM's VMI from `spec.template`, with the VM's name. A MAC pinned only on
the VMI would make the VM and its VMI disagree, and KubeVirt (v1.7+, `pkg/network/vmliveupdate`)
reports `RestartRequired` when a running VMI's interfaces differ from the template's. So the pin,
the allow annotation, our sidecar entry and the `macs` record go into the template: the VMI arrives
complete and its own admission changes nothing. The MAC is seeded with the VM's name, which is
the VMI's, so it is the same MAC a standalone VMI of that name would get.

A VM opts out on its own annotations (``<prefix>enabled: "false"`` in ``metadata``) as well as on its
template's. KubeVirt copies only the template's to the VMI (facts K12), so the VMI mutator reads the
VM that owns a VMI (``vm_owner``) before it changes or refuses one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from bridge_migration_contract import ALLOW_POD_BRIDGE_MIGRATION, HOOK_SIDECARS, AnnotationKeys
from webhook.config import WebhookConfig
from webhook.decision import WARN_PREFIX, Decision, PatchOp
from webhook.delivery import KubeVirtGates
from webhook.vmi_mutation import NOTHING_READ, mutate_vmi

TEMPLATE = "/spec/template"


def opted_out(obj: Mapping[str, Any] | None, keys: AnnotationKeys) -> bool:
    """Whether ``obj``'s own ``metadata.annotations`` say ``<prefix>enabled: "false"``."""
    metadata = obj.get("metadata") if isinstance(obj, Mapping) else None
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    value = annotations.get(keys.enabled) if isinstance(annotations, Mapping) else None
    return isinstance(value, str) and value.strip().lower() == "false"


def opt_out_note(key: str) -> str:
    return f'opted out by its own annotation {key}: "false"'


def _opted_out_vm(template_meta: object, *, who: str, keys: AnnotationKeys) -> Decision:
    """The answer for a VM opted out on its own annotations: no patch, and a warning saying so and
    what its template already carries (we remove nothing: its VMIs start with that)."""
    annotations = template_meta.get("annotations") if isinstance(template_meta, Mapping) else None
    ours = (ALLOW_POD_BRIDGE_MIGRATION, HOOK_SIDECARS, keys.delivery, keys.macs, keys.mac_policy)
    kept = [key for key in ours if isinstance(annotations, Mapping) and key in annotations]
    warning = (
        f"{WARN_PREFIX}{who} is {opt_out_note(keys.enabled)}: the VM and its template are left as they are, "
        "and the VMIs it starts are admitted as written"
    )
    if kept:
        warning += f"; its template still carries {', '.join(kept)}, which bridge-migration does not remove"
    return Decision(warnings=[warning])


class VmOwner(NamedTuple):
    name: str
    uid: str | None


def vm_owner(vmi: Mapping[str, Any]) -> VmOwner | None:
    """The VM a VMI was made from: its controller owner reference of kind ``VirtualMachine`` in
    ``kubevirt.io``, as virt-controller writes it (facts K12); None for any other VMI."""
    metadata = vmi.get("metadata")
    refs = metadata.get("ownerReferences") if isinstance(metadata, Mapping) else None
    for ref in refs if isinstance(refs, list) else []:
        if not isinstance(ref, Mapping) or ref.get("controller") is not True or ref.get("kind") != "VirtualMachine":
            continue
        name, uid, api_version = ref.get("name"), ref.get("uid"), ref.get("apiVersion")
        if isinstance(name, str) and name and isinstance(api_version, str) and api_version.startswith("kubevirt.io/"):
            return VmOwner(name, uid if isinstance(uid, str) and uid else None)
    return None


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
    if opted_out(vm, config.keys):
        who = f"VM {namespace}/{metadata.get('name') or metadata.get('generateName', '') + '*'}"
        return _opted_out_vm(template_meta, who=who, keys=config.keys)
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
