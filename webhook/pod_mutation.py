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

Where the pod cannot be given a working fixer (no ``libvirt-runtime`` volume, a root launcher, a
container of our name that is not ours) or our annotations would take it past Kubernetes' limit,
the pod is admitted as it is, with a warning: a VM starting never waits on us. A migration target
pod decided ``fail_closed`` (the chart's ``migration-target-pods`` entry, /mutate/migration-target-pods)
is refused instead: admitted, it would run the guest without a working fixer, while refused, the
migration waits and the guest stays on its source (docs/kubevirt-facts.md L8, L9).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge_migration_contract import (
    DOMAIN_ANNOTATION,
    INJECTED_CONTAINER,
    LIBVIRT_RUNTIME_VOLUME,
    MIGRATION_JOB_NAME_ANNOTATION,
    MIGRATION_JOB_UID_LABEL,
    PODINFO_ANNOTATIONS_FILE,
    PODINFO_VOLUME,
    dump_macs,
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


@dataclass(frozen=True)
class UnfixablePod:
    """Why a pod cannot be given a working fixer: ``warning`` where it is admitted as it is,
    ``reason`` and ``advice`` in the refusal of a target pod on the fail-closed route."""

    warning: str
    reason: str
    advice: str


def _no_libvirt_runtime() -> UnfixablePod:
    return UnfixablePod(
        warning=f"pod has no {LIBVIRT_RUNTIME_VOLUME} volume; the sidecar cannot reach libvirt",
        reason=f"the pod has no {LIBVIRT_RUNTIME_VOLUME} volume, so the fixer could not reach libvirt",
        # virt-controller renders it in every launcher pod (docs/kubevirt-facts.md L6).
        advice=f"KubeVirt puts {LIBVIRT_RUNTIME_VOLUME} in every launcher pod: look for another mutating webhook "
        "that removes it.",
    )


def _root_launcher(config: WebhookConfig) -> UnfixablePod:
    return UnfixablePod(
        warning="a root virt-launcher pod: injected mode needs a non-root launcher; no container added",
        reason="it is a root virt-launcher pod, where the injected fixer cannot reach libvirt",
        # A VMI's runtime user is fixed when it is created (docs/kubevirt-facts.md L11).
        advice="A VMI's launcher pods stay root for its life: restart the VM with KubeVirt's Root feature gate "
        f"off, or with the annotation {config.keys.delivery}: hook (or node) on its template.",
    )


def _name_clash() -> UnfixablePod:
    return UnfixablePod(
        warning=f"the pod already has a container named {INJECTED_CONTAINER} that is not ours; none added",
        reason=f"it already has a container named {INJECTED_CONTAINER} that is not ours, so ours cannot be added",
        advice="Find what adds a container of that name (another mutating webhook) and rename it.",
    )


def _fixer_ops(
    spec: Mapping[str, Any], ours: list[Where], *, config: WebhookConfig, into: list[PatchOp]
) -> UnfixablePod | None:
    """Mounts for our hook sidecars, or (none there) our injected container; a problem instead."""
    volumes = spec.get("volumes")
    volume_names = _names(volumes) if isinstance(volumes, list) else set()
    if LIBVIRT_RUNTIME_VOLUME not in volume_names:
        return _no_libvirt_runtime()
    if not ours and is_root_launcher(spec):
        # A root launcher's libvirt is qemu:///system, owned by root: our uid-107 container could
        # not reach it, and we do not hand a VM's pod a root container of our own.
        return _root_launcher(config)
    lists = _container_lists(spec)
    if not ours and any(INJECTED_CONTAINER in _names(items) for items in lists.values()):
        # A second container of that name (regular or init) would make the API server refuse the pod.
        return _name_clash()
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


# What a refused migration target pod means (docs/kubevirt-facts.md L8, L9); every refusal on the
# fail-closed route says it, and virt-controller records it on the VMI (a FailedCreate event).
TARGET_POD_WAITS = (
    "the migration stays Pending and KubeVirt creates the target pod again with backoff, "
    "while the VM keeps running on its source"
)


def _refuse_target(pod: Mapping[str, Any], namespace: str, reason: str, advice: str) -> Decision:
    """The refusal of a target pod that would run the guest without a working fixer."""
    metadata = pod.get("metadata") or {}
    ann = metadata.get("annotations") or {}
    vmi = ann.get(DOMAIN_ANNOTATION) or "?"
    migration = ann.get(MIGRATION_JOB_NAME_ANNOTATION)  # virt-controller's (facts L7)
    if migration:
        cancel = f"`kubectl delete vmim {migration} -n {namespace}` cancels the migration."
    else:
        uid = (metadata.get("labels") or {}).get(MIGRATION_JOB_UID_LABEL)
        cancel = f"Deleting the migration (uid {uid}) cancels it."
    return Decision.deny(
        f"{WARN_PREFIX}migration target pod of VMI {namespace}/{vmi} refused: {reason}, and without a working "
        f"fixer the guest would keep its old IP address after the move; {TARGET_POD_WAITS}. {advice} {cancel}"
    )


def _too_big(ann: Mapping[str, str], changes: Mapping[str, str]) -> str | None:
    """Why ``changes`` do not fit on the pod (Kubernetes' total, facts K10); None when they do."""
    if not changes or (after := annotations_size({**ann, **changes})) <= TOTAL_ANNOTATION_SIZE_LIMIT:
        return None
    return (
        f"its annotations take {annotations_size(ann)} bytes and ours ({', '.join(changes)}) would bring them "
        f"to {after}, over Kubernetes' limit of {TOTAL_ANNOTATION_SIZE_LIMIT} bytes in all"
    )


def _not_fitting(pod: Mapping[str, Any], namespace: str, why: str, *, refuse: bool) -> Decision:
    """Nothing of ours when our annotations do not fit, as while the webhook is down: a first pod is
    admitted as it is (the VM starts; the fixer acts in a migration's target pod), a target pod is
    refused where it fails closed (without the MACs, the CNI hint and the version its fixer would
    not work)."""
    if refuse:
        advice = "Shorten the VM's annotations (its launcher pods carry them, KubeVirt's and ours) and restart it."
        return _refuse_target(pod, namespace, f"{why}, so ours cannot be added", advice)
    vmi = ((pod.get("metadata") or {}).get("annotations") or {}).get(DOMAIN_ANNOTATION) or "?"
    return Decision(
        warnings=[f"{WARN_PREFIX}launcher pod of VMI {namespace}/{vmi} admitted as it is, without ours: {why}"]
    )


def mutate_launcher_pod(
    pod: Mapping[str, Any],
    *,
    config: WebhookConfig,
    vmi_macs: Mapping[str, str] | None = None,
    pod_network_interfaces: list[str] | None = None,
    kubevirt_version: str | None = None,
    namespace: str | None = None,
    fail_closed: bool = False,
) -> Decision:
    """Decide the patch for a virt-launcher pod being created.

    ``vmi_macs`` are the expected MACs read from the VMI when the pod does not carry them;
    ``pod_network_interfaces`` names the VMI's pod-network interfaces (the CNI hint is given for
    the first one the MACs know), when known. ``kubevirt_version`` (the KubeVirt CR's observed
    version) goes on the pod for the sidecar, which picks KubeVirt's DHCP MAC rule by it.
    ``fail_closed``: a target pod that would get no working fixer is refused, not admitted as it
    is (a first pod always is). ``namespace``: the review's, for the messages."""
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

    namespace = namespace or str(metadata.get("namespace") or "")
    refuse = fail_closed and MIGRATION_JOB_UID_LABEL in labels
    warnings: list[str] = []
    ops: list[PatchOp] = []
    if (ours or delivery == "inject") and (problem := _fixer_ops(spec, ours, config=config, into=ops)):
        if refuse:
            return _refuse_target(pod, namespace, problem.reason, problem.advice)
        return Decision(warnings=[f"{WARN_PREFIX}{problem.warning}"])
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
    if (why := _too_big(ann, changes)) is not None:
        return _not_fitting(pod, namespace, why, refuse=refuse)
    ops.extend(set_annotations(annotations, changes))
    return Decision(patch=ops, warnings=warnings)
