"""Mutating a virt-launcher pod at CREATE: the pure decision.

virt-controller builds the pod from the VMI, hook sidecars included, but mounts the libvirt
runtime directory only into the compute container. Our sidecar container (recognised by its
image) gets that volume and the pod's annotations through a downward-API file. On a migration
target pod the expected MACs are copied onto the pod and, when configured, handed to the CNI
under its own annotation key so the target pod gets the guest's MAC.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge_migration_contract import (
    LIBVIRT_RUNTIME_PATH,
    LIBVIRT_RUNTIME_VOLUME,
    MIGRATION_JOB_UID_LABEL,
    PODINFO_ANNOTATIONS_FILE,
    PODINFO_DIR,
    PODINFO_VOLUME,
    dump_macs,
    parse_macs,
)
from webhook.config import WebhookConfig
from webhook.decision import Decision
from webhook.hook_sidecars import is_our_image
from webhook.patches import PatchOp, pointer, set_annotations
from webhook.vmi_mutation import WARN_PREFIX


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


def _mounts_for(container: Mapping[str, Any], index: int) -> list[PatchOp]:
    wanted: list[dict[str, Any]] = [
        {"name": LIBVIRT_RUNTIME_VOLUME, "mountPath": LIBVIRT_RUNTIME_PATH},
        {"name": PODINFO_VOLUME, "mountPath": PODINFO_DIR, "readOnly": True},
    ]
    mounts = container.get("volumeMounts")
    if not isinstance(mounts, list):
        return [{"op": "add", "path": pointer("spec", "containers", index, "volumeMounts"), "value": wanted}]
    have = _names(mounts)
    return [
        {"op": "add", "path": pointer("spec", "containers", index, "volumeMounts", "-"), "value": m}
        for m in wanted
        if m["name"] not in have
    ]


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
    containers = spec.get("containers")
    if not isinstance(containers, list):
        return Decision()
    # Ours by repository: a launcher pod of a VMI admitted by an earlier release has an older tag.
    ours = [
        i
        for i, c in enumerate(containers)
        if isinstance(c, Mapping) and is_our_image(c.get("image"), config.sidecar_image)
    ]
    if not ours:
        return Decision()

    warnings: list[str] = []
    ops: list[PatchOp] = []
    volumes = spec.get("volumes")
    volume_names = _names(volumes) if isinstance(volumes, list) else set()
    if LIBVIRT_RUNTIME_VOLUME not in volume_names:
        warnings.append(f"{WARN_PREFIX}pod has no {LIBVIRT_RUNTIME_VOLUME} volume; the sidecar cannot reach libvirt")
        return Decision(warnings=warnings)
    if PODINFO_VOLUME not in volume_names:
        ops.append({"op": "add", "path": "/spec/volumes/-", "value": _podinfo_volume()})
    for index in ours:
        ops.extend(_mounts_for(containers[index], index))

    metadata = pod.get("metadata") or {}
    labels = metadata.get("labels") or {}
    annotations: Mapping[str, str] | None = metadata.get("annotations")
    ann = annotations or {}
    changes: dict[str, str] = {}
    if kubevirt_version and config.keys.kubevirt_version not in ann:
        changes[config.keys.kubevirt_version] = kubevirt_version
    if MIGRATION_JOB_UID_LABEL in labels:
        keys = config.keys
        macs: dict[str, str] = {}
        raw = ann.get(keys.macs)
        if raw is not None:
            try:
                macs = parse_macs(raw)
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
    ops.extend(set_annotations(annotations, changes))
    return Decision(patch=ops, warnings=warnings)
