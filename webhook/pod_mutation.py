"""Mutating a virt-launcher pod at CREATE: the pure decision.

virt-controller builds the pod from the VMI, hook sidecars included, but mounts the libvirt
runtime directory only into the compute container. Our sidecar container (recognised by its
image) gets that volume and the pod's annotations through a downward-API file. A pod whose VMI
records ``<prefix>delivery: inject`` (copied from the VMI, docs/kubevirt-facts.md L2) and has no
container of ours gets one added here (webhook/injected.py), with the same two mounts, as the last
of its init containers (a native sidecar); virt-controller's temporary WaitForFirstConsumer pod,
in which no VM runs, gets none. A pod admitted by an earlier release has ours among its regular
containers and keeps it as it is: never a second one. On a migration
target pod the expected MACs are copied onto the pod and, when configured, handed to the CNI
under its own annotation key so the target pod gets the guest's MAC.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge_migration_contract import (
    INJECTED_CONTAINER,
    LIBVIRT_RUNTIME_VOLUME,
    MIGRATION_JOB_UID_LABEL,
    PODINFO_ANNOTATIONS_FILE,
    PODINFO_VOLUME,
    dump_macs,
)
from webhook.config import WebhookConfig
from webhook.decision import WARN_PREFIX, Decision, PatchOp, pointer, set_annotations
from webhook.delivery import recorded_delivery
from webhook.hook_sidecars import is_our_image
from webhook.injected import fixer_mounts, injected_container, is_root_launcher, is_temporary_pod
from webhook.macs import parse_unicast_macs


def _podinfo_volume() -> dict[str, Any]:
    return {
        "name": PODINFO_VOLUME,
        "downwardAPI": {
            "items": [{"path": PODINFO_ANNOTATIONS_FILE, "fieldRef": {"fieldPath": "metadata.annotations"}}]
        },
    }


def _names(items: list[Any]) -> set[str]:
    """The string ``name`` of each object in a list; anything else in it is not ours to judge."""
    return {n for item in items if isinstance(item, Mapping) and isinstance(n := item.get("name"), str)}


Where = tuple[str, int]  # ("containers" or "initContainers", index)


def _container_lists(spec: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The pod's regular and init containers, each a list (empty when absent or not a list)."""
    return {
        field: items if isinstance(items := spec.get(field), list) else [] for field in ("containers", "initContainers")
    }


def _ours(spec: Mapping[str, Any], config: WebhookConfig) -> list[Where]:
    """Our containers by image repository, any tag: a hook sidecar or an injected container of this
    release (an init container) or of an earlier one (a regular container)."""
    return [
        (field, i)
        for field, items in _container_lists(spec).items()
        for i, c in enumerate(items)
        if isinstance(c, Mapping) and is_our_image(c.get("image"), config.sidecar_image)
    ]


def _mounts_for(container: Mapping[str, Any], where: Where) -> list[PatchOp]:
    field, index = where
    wanted = fixer_mounts()
    mounts = container.get("volumeMounts")
    if not isinstance(mounts, list):
        return [{"op": "add", "path": pointer("spec", field, index, "volumeMounts"), "value": wanted}]
    have = _names(mounts)
    return [
        {"op": "add", "path": pointer("spec", field, index, "volumeMounts", "-"), "value": m}
        for m in wanted
        if m["name"] not in have
    ]


def _add_injected(spec: Mapping[str, Any], *, config: WebhookConfig) -> PatchOp:
    """Our container as the last init container (webhook/injected.py says why last)."""
    container = injected_container(spec, config=config)
    if isinstance(spec.get("initContainers"), list):
        return {"op": "add", "path": "/spec/initContainers/-", "value": container}
    return {"op": "add", "path": "/spec/initContainers", "value": [container]}


def _fixer_ops(spec: Mapping[str, Any], ours: list[Where], *, config: WebhookConfig, into: list[PatchOp]) -> str | None:
    """Mounts for our hook sidecars, or (none there) our injected container; a problem instead."""
    volumes = spec.get("volumes")
    volume_names = _names(volumes) if isinstance(volumes, list) else set()
    if LIBVIRT_RUNTIME_VOLUME not in volume_names:
        return f"pod has no {LIBVIRT_RUNTIME_VOLUME} volume; the sidecar cannot reach libvirt"
    if not ours and is_root_launcher(spec):
        # A root launcher's libvirt is qemu:///system, owned by root: our uid-107 container could
        # not reach it, and we do not hand a VM's pod a root container of our own.
        return "a root virt-launcher pod: injected mode needs a non-root launcher; no container added"
    lists = _container_lists(spec)
    if not ours and any(INJECTED_CONTAINER in _names(items) for items in lists.values()):
        # A second container of that name (regular or init) would make the API server refuse the pod.
        return f"the pod already has a container named {INJECTED_CONTAINER} that is not ours; none added"
    if PODINFO_VOLUME not in volume_names:
        into.append({"op": "add", "path": "/spec/volumes/-", "value": _podinfo_volume()})
    for field, index in ours:
        into.extend(_mounts_for(lists[field][index], (field, index)))
    if not ours:
        into.append(_add_injected(spec, config=config))
    return None


def _target_pod_macs(
    ann: Mapping[str, str],
    *,
    config: WebhookConfig,
    vmi_macs: Mapping[str, str] | None,
    pod_network_interfaces: list[str] | None,
    warnings: list[str],
) -> dict[str, str]:
    """The annotations a migration target pod gets: the expected MACs (from the VMI when the pod
    lacks them) and, with ``--cni-mac-annotation``, the pod-network MAC for the CNI."""
    keys = config.keys
    changes: dict[str, str] = {}
    macs: dict[str, str] = {}
    raw = ann.get(keys.macs)
    if raw is not None:
        try:
            # A MAC no NIC can carry is not handed to the CNI (the VMI's admission refuses it now;
            # a VMI admitted before that may still carry one).
            macs = parse_unicast_macs(raw)
        except ValueError as exc:
            warnings.append(f"{WARN_PREFIX}annotation {keys.macs} on the pod ignored: {exc}")
    elif vmi_macs:
        macs = dict(vmi_macs)
        changes[keys.macs] = dump_macs(macs)
    hint_key = config.cni_mac_annotation
    if hint_key and hint_key not in ann and macs:
        if pod_network_interfaces is not None:
            candidates = [n for n in pod_network_interfaces if n in macs]
        else:
            candidates = list(macs) if len(macs) == 1 else []
        if candidates:
            changes[hint_key] = macs[candidates[0]]
        else:
            warnings.append(f"{WARN_PREFIX}no pod-network MAC known; {hint_key} not set")
    return changes


def mutate_launcher_pod(
    pod: Mapping[str, Any],
    *,
    config: WebhookConfig,
    vmi_macs: Mapping[str, str] | None = None,
    pod_network_interfaces: list[str] | None = None,
    kubevirt_version: str | None = None,
) -> Decision:
    """Decide the patch for a virt-launcher pod being created.

    ``vmi_macs`` are the expected MACs read from the VMI when the pod does not carry them;
    ``pod_network_interfaces`` names the VMI's pod-network interfaces (the CNI hint is given for
    the first one the MACs know), when known. ``kubevirt_version`` (the KubeVirt CR's observed
    version) goes on the pod for the sidecar, which picks KubeVirt's DHCP MAC rule by it.
    """
    spec = pod.get("spec") or {}
    if not isinstance(spec.get("containers"), list):
        return Decision()
    # Ours by repository: a launcher pod of a VMI admitted by an earlier release has an older tag.
    ours = _ours(spec, config)
    metadata = pod.get("metadata") or {}
    labels = metadata.get("labels") or {}
    annotations: Mapping[str, str] | None = metadata.get("annotations")
    ann = annotations or {}
    # A container of ours (a hook sidecar, an injected one) wins over the record: never a second
    # fixer in one pod. No VM ever runs in a temporary pod: nothing to fix there.
    delivery = None if ours or is_temporary_pod(ann) else recorded_delivery(ann, config.keys)
    if not ours and delivery is None:
        return Decision()

    warnings: list[str] = []
    ops: list[PatchOp] = []
    if ours or delivery == "inject":
        problem = _fixer_ops(spec, ours, config=config, into=ops)
        if problem is not None:
            return Decision(warnings=[f"{WARN_PREFIX}{problem}"])
    changes: dict[str, str] = {}
    if kubevirt_version and config.keys.kubevirt_version not in ann:
        changes[config.keys.kubevirt_version] = kubevirt_version
    if MIGRATION_JOB_UID_LABEL in labels:
        changes.update(
            _target_pod_macs(
                ann,
                config=config,
                vmi_macs=vmi_macs,
                pod_network_interfaces=pod_network_interfaces,
                warnings=warnings,
            )
        )
    ops.extend(set_annotations(annotations, changes))
    return Decision(patch=ops, warnings=warnings)
