"""Mutating a VMI: the pure decisions (VMI dicts in, patch and warnings out, no I/O).

At CREATE:

For every bridge/macvtap interface the contract says we look after, the VMI gets:
the upstream allow annotation (bridge on the pod network), a pinned MAC under ``pin`` (and for a
macvtap interface under any policy: the target's macvtap device carries no other MAC), the
record of expected MACs, policy and NIC refresh (``--nic-refresh`` unless the VMI names one), and
the fixer by the VMI's delivery (webhook/delivery.py): our hook sidecar entry, or the
``<prefix>delivery`` record (inject: the pod webhook adds our container to its launcher pods; node:
a node agent fixes it). Anything we cannot handle safely is left as it was with a warning: this
webhook must never make a VMI uncreatable. A macvtap interface that is not ours (the discontinued
core binding, the plugin on the pod network) gets a warning saying what to use instead.

At UPDATE a VMI is never retrofitted (`restore_dropped_macs`): the only change is putting back a MAC
we pinned at CREATE that a second `kubectl apply` dropped (a JSON merge patch replaces a custom
resource's `interfaces` list whole). A VMI that runs without our changes keeps running without them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge_migration_contract import (
    ALLOW_POD_BRIDGE_MIGRATION,
    DEFAULT_NIC_REFRESH,
    DELIVERIES,
    HOOK_SIDECARS,
    Delivery,
    MacPolicy,
    MacvtapLeftAlone,
    ManagedInterface,
    dump_interface_names,
    dump_macs,
    macvtap_left_alone,
    multus_bridge_names,
    parse_delivery,
    parse_mac_policy,
    parse_macs,
    parse_nic_refresh,
    parse_skip_multus_bridges,
    vmi_managed_interfaces,
)
from webhook.config import WebhookConfig
from webhook.decision import (
    TOTAL_ANNOTATION_SIZE_LIMIT,
    WARN_PREFIX,
    Decision,
    PatchOp,
    annotations_size,
    pointer,
    set_annotations,
)
from webhook.delivery import KubeVirtGates, missing_fixer, resolve_delivery
from webhook.hook_sidecars import MalformedSidecarsError, merged_sidecars
from webhook.macs import pinned_mac

NOTHING_READ = KubeVirtGates()


def _gate_warning(gate_on: bool | None, who: str, names: str) -> str:
    why = (
        "KubeVirt's Sidecar feature gate is off"
        if gate_on is False
        else "KubeVirt's Sidecar feature gate could not be read"
    )
    return f"{WARN_PREFIX}{why}; {who} (interfaces {names}) stays non-migratable. Enable the gate, recreate the VMI."


def _inject_warning(gate_on: bool | None, who: str, names: str) -> str:
    why = "is off" if gate_on is False else "could not be read"
    return (
        f"{WARN_PREFIX}KubeVirt's Sidecar feature gate {why}; {who} (interfaces {names}) is made migratable "
        "with delivery inject: the fixer runs as a container the webhook adds to its virt-launcher pods"
    )


def _delivery(ann: Mapping[str, str], *, key: str, config: WebhookConfig, gate_on: bool | None) -> Delivery | None:
    """The VMI's own ``<prefix>delivery`` annotation wins (a user's choice, or the record a VM
    template kept from its first admission); else ``--delivery``, auto resolved by the gate.
    None: the annotation holds something else."""
    raw = ann.get(key)
    if raw is None:
        return resolve_delivery(config.delivery, sidecar_gate_on=gate_on)
    return parse_delivery(raw)


def _policy(ann: Mapping[str, str], *, key: str, default: MacPolicy, warnings: list[str]) -> MacPolicy:
    raw = ann.get(key)
    if raw is None:
        return default
    try:
        return parse_mac_policy(raw.strip())
    except ValueError as exc:
        warnings.append(f"{WARN_PREFIX}annotation {key} ignored: {exc}; using {default}")
        return default


def _recorded_macs(ann: Mapping[str, str], *, key: str, warnings: list[str]) -> dict[str, str] | None:
    raw = ann.get(key)
    if raw is None:
        return None
    try:
        return parse_macs(raw)
    except ValueError as exc:
        warnings.append(f"{WARN_PREFIX}annotation {key} left as it is: {exc}")
        return None


def _macs(
    vmi: Mapping[str, Any],
    managed: list[ManagedInterface],
    *,
    policy: MacPolicy,
    recorded: Mapping[str, str],
    seed: tuple[str, str, str],
    warnings: list[str],
) -> tuple[list[PatchOp], dict[str, str], list[str]]:
    """Pin MACs where the policy asks, and on every macvtap interface whatever it asks; return the
    patch, every MAC known at admission and the macvtap interfaces pinned against the policy.
    ``seed``: what a pinned MAC is derived from, namespace, VMI name and the install's salt."""
    spec_ifaces = vmi["spec"]["domain"]["devices"]["interfaces"]
    ops: list[PatchOp] = []
    known: dict[str, str] = {}
    forced: list[str] = []
    for iface in managed:
        mac = iface["mac"]
        if mac is None and spec_ifaces[iface["index"]].get("macAddress"):
            # virt-api rejects the bad MAC itself (facts K7); we do not overwrite what the user wrote.
            warnings.append(f"{WARN_PREFIX}interface {iface['name']} has an invalid macAddress; not pinned")
            continue
        if mac is None and (policy == "pin" or iface["binding"] == "macvtap"):
            if policy != "pin":
                forced.append(iface["name"])
            # A MAC the user recorded for this interface is the one to pin.
            namespace, name, salt = seed
            mac = recorded.get(iface["name"]) or pinned_mac(
                namespace=namespace, vmi_name=name, interface=iface["name"], salt=salt
            )
            path = pointer("spec", "domain", "devices", "interfaces", iface["index"], "macAddress")
            ops.append({"op": "add", "path": path, "value": mac})
        if mac is not None:
            known[iface["name"]] = mac
    return ops, known, forced


def _macvtap_pin_warning(name: str, policy: MacPolicy) -> str:
    # The target pod's macvtap device gets the spec's MAC and only that one (facts V6): without a
    # pinned MAC the guest keeps the source device's MAC and the target device drops its frames.
    return (
        f"{WARN_PREFIX}interface {name} uses the macvtap binding plugin: its MAC is pinned although the MAC "
        f"policy is {policy}. The target pod's macvtap device carries the guest's MAC only when the VMI spec sets "
        "one; without it, frames to the guest are not delivered after a migration"
    )


# Each says why the interface is left alone and what to use instead (facts V1-V3).
_MACVTAP_LEFT_ALONE: dict[MacvtapLeftAlone, str] = {
    "core": (
        "uses the core macvtap binding (macvtap: {}), which KubeVirt discontinued in v1.3 (virt-api refuses it "
        "from v1.5 on); bridge-migration leaves it alone. Use the macvtap binding plugin instead: "
        "binding: {name: macvtap} on a Multus network"
    ),
    "pod-network": (
        "uses the macvtap binding plugin on the pod network, but KubeVirt's macvtap plugin is for Multus "
        "secondary networks only; bridge-migration leaves it alone. Put it on a Multus network"
    ),
}


def _macvtap_warnings(vmi: Mapping[str, Any], *, who: str) -> list[str]:
    spec = vmi.get("spec")
    left = macvtap_left_alone(spec if isinstance(spec, Mapping) else {})
    return [f"{WARN_PREFIX}{who}: interface {name} " + _MACVTAP_LEFT_ALONE[why] for name, why in left]


def _spec_warnings(vmi: Mapping[str, Any], raw_skip: str | None, *, key: str, who: str) -> list[str]:
    """What the user should know of the VMI's interfaces whatever we do with it: opt-out names
    that match nothing, and macvtap interfaces that are not ours."""
    return _skip_warnings(vmi, raw_skip, key=key, who=who) + _macvtap_warnings(vmi, who=who)


def _skip_warnings(vmi: Mapping[str, Any], raw: str | None, *, key: str, who: str) -> list[str]:
    """A warning for each name in the opt-out annotation that is no bridge interface on a Multus
    network of this VMI: a typo there would otherwise leave the user thinking it worked."""
    skip = parse_skip_multus_bridges(raw)
    if skip == "*" or not skip:
        return []
    spec = vmi.get("spec")
    known = set(multus_bridge_names(spec if isinstance(spec, Mapping) else {}))
    unknown = sorted(skip - known)
    if not unknown:
        return []
    return [
        f"{WARN_PREFIX}annotation {key} names {', '.join(unknown)}, which {who} has no bridge interface"
        " on a Multus network for; nothing skipped for them"
    ]


def _fixer(
    ann: Mapping[str, str],
    *,
    config: WebhookConfig,
    gate_on: bool | None,
    kubevirt: KubeVirtGates,
    who: str,
    names: str,
) -> tuple[Delivery, str | None, str | None] | str:
    """The VMI's delivery, for hook the new hookSidecars value (None: already right), and the note
    to give when it is made migratable; or, as a plain string, the warning saying why the VMI is
    left unchanged: no delivery it names, or one whose fixer would not act."""
    keys = config.keys
    delivery = _delivery(ann, key=keys.delivery, config=config, gate_on=gate_on)
    if delivery is None:
        # The pod webhook could not tell how to deliver the fixer: migratable without it would strand.
        choices = ", ".join(DELIVERIES)
        return f"{WARN_PREFIX}annotation {keys.delivery} must be one of {choices}; {who} left unchanged"
    missing = missing_fixer(delivery, ann, node_agent=config.node_agent, kubevirt=kubevirt)
    if missing is not None:
        why = f"delivery {delivery}, but {missing.why}"
        return f"{WARN_PREFIX}{why}; {who} (interfaces {names}) stays non-migratable. {missing.fix}"
    if delivery != "hook":
        auto = config.delivery == "auto" and ann.get(keys.delivery) is None
        return delivery, None, _inject_warning(gate_on, who, names) if auto else None
    if gate_on is not True:
        return _gate_warning(gate_on, who, names)
    # The sidecar first: if the user's list cannot be merged, we change nothing at all, since a
    # migratable VMI without our sidecar is exactly the stranded guest this project prevents.
    try:
        sidecars = merged_sidecars(
            ann.get(HOOK_SIDECARS),
            image=config.sidecar_image,
            pull_policy=config.sidecar_pull_policy,
            prefix=keys.prefix,
            log_format=config.sidecar_log_format,
        )
    except MalformedSidecarsError as exc:
        return f"{WARN_PREFIX}annotation {HOOK_SIDECARS} {exc}; {who} left unchanged"
    return delivery, sidecars, None


def _warn_bad_nic_refresh(ann: Mapping[str, str], *, key: str, warnings: list[str]) -> None:
    if (refresh := ann.get(key)) is not None:
        try:
            parse_nic_refresh(refresh.strip())
        except ValueError as exc:
            # Left as written (it is the user's); the fixer reads it the same way and uses its own
            # default (sidecar/core/podinfo.py), whatever --nic-refresh says.
            warnings.append(f"{WARN_PREFIX}annotation {key} ignored: {exc}; using {DEFAULT_NIC_REFRESH}")


def _annotation_changes(
    ann: Mapping[str, str],
    *,
    config: WebhookConfig,
    policy: MacPolicy,
    delivery: Delivery,
    sidecars: str | None,
    managed: list[ManagedInterface],
    known: Mapping[str, str],
    recorded: Mapping[str, str] | None,
) -> dict[str, str]:
    """The annotations to set on the VMI: each one only where it is absent or ours to update."""
    keys = config.keys
    changes: dict[str, str] = {}
    if keys.mac_policy not in ann:
        changes[keys.mac_policy] = policy
    if keys.nic_refresh not in ann:
        # The install's default (--nic-refresh), kept with the VMI as its MAC policy is: the fixer reads it.
        changes[keys.nic_refresh] = config.nic_refresh
    if sidecars is not None:
        changes[HOOK_SIDECARS] = sidecars
    if delivery != "hook" and ann.get(keys.delivery) is None:
        # The record the pod webhook and the migration validator read (virt-controller copies it).
        changes[keys.delivery] = delivery
    if delivery == "inject" and keys.interfaces not in ann:
        # The injected fixer sees no VMI: it fixes these interfaces and no other tap it finds.
        changes[keys.interfaces] = dump_interface_names(i["name"] for i in managed)
    if ALLOW_POD_BRIDGE_MIGRATION not in ann and any(
        i["binding"] == "bridge" and i["network"] == "pod" for i in managed
    ):
        changes[ALLOW_POD_BRIDGE_MIGRATION] = "true"
    if keys.macs not in ann:
        if known:
            changes[keys.macs] = dump_macs(known)
    elif recorded is not None:
        # The user's own entries win; we only fill in interfaces they did not list.
        merged = {**known, **recorded}
        if merged != recorded:
            changes[keys.macs] = dump_macs(merged)
    return changes


def mutate_vmi(
    vmi: Mapping[str, Any],
    *,
    namespace: str,
    config: WebhookConfig,
    sidecar_gate_on: bool | None,
    kubevirt: KubeVirtGates = NOTHING_READ,
    fallback_name: str = "",
) -> Decision:
    """Decide the patch for a VMI being created.

    ``sidecar_gate_on`` (None: unknown) and ``kubevirt``: KubeVirt's gates, which say what delivery acts.
    ``fallback_name`` seeds pinned MACs when the VMI has no name yet (generateName).
    The VMI's annotations must already be known to be a str->str mapping (the shell checks).
    """
    keys = config.keys
    metadata = vmi.get("metadata") or {}
    annotations: Mapping[str, str] | None = metadata.get("annotations")
    ann = annotations or {}
    name = metadata.get("name") or ""
    if ann.get(keys.enabled, "").strip().lower() == "false":
        return Decision()
    who = f"VMI {namespace}/{name or metadata.get('generateName', '') + '*'}"
    warnings = _spec_warnings(vmi, ann.get(keys.skip_multus_bridges), key=keys.skip_multus_bridges, who=who)
    managed = vmi_managed_interfaces(vmi, keys)
    if not managed:
        return Decision(warnings=warnings)
    names = ", ".join(i["name"] for i in managed)
    fixer = _fixer(ann, config=config, gate_on=sidecar_gate_on, kubevirt=kubevirt, who=who, names=names)
    if isinstance(fixer, str):
        return Decision(warnings=[*warnings, fixer])
    delivery, sidecars, note = fixer
    note_at = len(warnings)  # said only if the VMI is patched
    policy = _policy(ann, key=keys.mac_policy, default=config.mac_policy, warnings=warnings)
    recorded = _recorded_macs(ann, key=keys.macs, warnings=warnings)
    _warn_bad_nic_refresh(ann, key=keys.nic_refresh, warnings=warnings)
    ops, known, forced = _macs(
        vmi,
        managed,
        policy=policy,
        recorded=recorded or {},
        seed=(namespace, name or fallback_name, config.mac_salt),
        warnings=warnings,
    )
    changes = _annotation_changes(
        ann,
        config=config,
        policy=policy,
        delivery=delivery,
        sidecars=sidecars,
        managed=managed,
        known=known,
        recorded=recorded,
    )
    if (too_big := _over_the_limit(ann, changes, who=who, names=names)) is not None:
        return Decision(warnings=[*warnings, too_big])
    ops.extend(set_annotations(annotations, changes))
    warnings[note_at:note_at] = [note] if note else []
    warnings += [_macvtap_pin_warning(iface, policy) for iface in forced]  # said only if the VMI is patched
    return Decision(patch=ops, warnings=warnings)


def _over_the_limit(ann: Mapping[str, str], changes: Mapping[str, str], *, who: str, names: str) -> str | None:
    """The warning when the VMI's annotations with ``changes`` would exceed Kubernetes' total: the
    API server would then refuse the VMI after we admitted it (facts K10). None when they fit."""
    before = annotations_size(ann)
    after = annotations_size({**ann, **changes})
    if after <= TOTAL_ANNOTATION_SIZE_LIMIT:
        return None
    return (
        f"{WARN_PREFIX}{who} (interfaces {names}) stays non-migratable: its annotations take {before} bytes, "
        f"ours would bring them to {after}, over Kubernetes' limit of {TOTAL_ANNOTATION_SIZE_LIMIT} bytes in all, "
        "and the API server would refuse it. Admitted as written; shorten its annotations and recreate it."
    )


def _interfaces(obj: Mapping[str, Any]) -> list[Any]:
    spec = obj.get("spec")
    domain = spec.get("domain") if isinstance(spec, Mapping) else None
    devices = domain.get("devices") if isinstance(domain, Mapping) else None
    ifaces = devices.get("interfaces") if isinstance(devices, Mapping) else None
    return ifaces if isinstance(ifaces, list) else []


def restore_dropped_macs(new: Mapping[str, Any], old: Mapping[str, Any] | None, *, config: WebhookConfig) -> Decision:
    """Decide the patch for a VMI UPDATE: only MACs the old object had, that our `macs` record says
    we pinned, and that the new object lacks, go back. Never a warning, never anything else."""
    if not isinstance(old, Mapping):
        return Decision()
    metadata = old.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    raw = annotations.get(config.keys.macs) if isinstance(annotations, Mapping) else None
    if not isinstance(raw, str):
        return Decision()
    try:
        recorded = parse_macs(raw)
    except ValueError:
        return Decision()
    before = {i.get("name"): i.get("macAddress") for i in _interfaces(old) if isinstance(i, Mapping)}
    ops: list[PatchOp] = []
    for index, iface in enumerate(_interfaces(new)):
        if not isinstance(iface, Mapping) or "macAddress" in iface:
            continue
        name = iface.get("name")
        mac = before.get(name)
        if isinstance(name, str) and isinstance(mac, str) and recorded.get(name) == mac:
            path = pointer("spec", "domain", "devices", "interfaces", index, "macAddress")
            ops.append({"op": "add", "path": path, "value": mac})
    return Decision(patch=ops)
