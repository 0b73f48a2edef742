"""The fixer as a container of the virt-launcher pod (delivery inject): its shape, pure.

KubeVirt's hook sidecars need the Alpha ``Sidecar`` gate; a container added to the pod by the pod
webhook needs none: virt-launcher waits only for the hook sidecars the VMI's annotation lists
(docs/kubevirt-facts.md I1), so this one serves no hook and learns the VMI's annotations from the
pod and the domain from libvirt. Its shape follows what KubeVirt gives a non-root launcher's
sidecars (facts H5) and keeps the pod's QoS class (facts I4):

* Guaranteed pod: requests = limits = 200m CPU / 64M memory, KubeVirt's own sidecar figures (H1),
  inside which the fixer is measured (docs/performance.md, "Sidecar memory");
* Burstable pod: limits 200m / 64M (the same hard cap) with smaller requests, 10m / 48M (the
  measured peak RSS, 43.7 MiB, rounded up), so the scheduler books what it uses. Adding a container
  cannot turn a Burstable pod Guaranteed: either some container lacks a CPU or memory limit, or the
  pod's requests already fall short of its limits and ours widen the gap;
* BestEffort pod: no resources at all, since any request or limit would make it Burstable;
* a pod with pod-level ``spec.resources`` (Kubernetes' PodLevelResources; KubeVirt v1.9 sets none):
  none either. The class then comes from the pod level, and container figures beyond the pod's
  own would make the API server refuse the pod.

It is a Kubernetes **native sidecar** (an init container with ``restartPolicy: Always``; on by
default from Kubernetes 1.29, GA in 1.33; KubeVirt's own ``guest-console-log`` is one from v1.6,
facts I9), appended after KubeVirt's own init containers (facts I10):

* the kubelet restarts it after a crash or an OOM kill although the pod's ``restartPolicy`` is
  Never (facts H3), and the restarted process catches up on a migration it missed; the pod, and
  through it the VMI, is NotReady only until it runs again (facts I8), not until the next migration;
* the pod ends when its regular containers end: once ``compute`` has exited the kubelet stops our
  container, so a compute that died before starting libvirt no longer leaves a Running pod that
  makes virt-controller hold every later migration of the VMI (facts I11);
* virt-controller never looks at it: ``IsPodReady`` reads only the regular containers' statuses,
  ``isComputeContainerDown`` only ``compute`` (facts I7); an image it cannot pull still shows on the
  VMI (``checkForContainerImageError`` reads the init containers' statuses too);
* last in ``initContainers``: KubeVirt's init containers keep their places and run before ours
  starts, so ours adds nothing to their resource peak (the kubelet sums a sidecar only with what
  starts after it), and it starts just before compute, whose virtqemud it waits for.

No probe: the kubelet starts compute once ours has started (no startupProbe to wait for), and a
container without a readiness probe is Ready as soon as it runs.

Hardened as Pod Security ``restricted`` asks (facts I12): read-only root filesystem (the fixer
writes nothing; no bytecode caches either), seccomp ``RuntimeDefault``, no privilege escalation,
all capabilities dropped, non-root; ``libvirt-runtime`` read-only, since connecting to a unix
socket needs write permission on the socket's inode, which a read-only mount does not take away.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from bridge_migration_contract import (
    FIXER_COMMAND,
    INJECTED_CONTAINER,
    LIBVIRT_RUNTIME_PATH,
    LIBVIRT_RUNTIME_VOLUME,
    PODINFO_DIR,
    PODINFO_VOLUME,
    fixer_args,
)
from webhook.config import WebhookConfig

QosClass = Literal["Guaranteed", "Burstable", "BestEffort"]
LAUNCHER_UID = 107
# KubeVirt's EphemeralProvisioningObject (staging/src/kubevirt.io/api/core/v1/types.go).
EPHEMERAL_PROVISIONING = "kubevirt.io/ephemeral-provisioning"
GUARANTEED_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "200m", "memory": "64M"},
    "limits": {"cpu": "200m", "memory": "64M"},
}
BURSTABLE_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "10m", "memory": "48M"},
    "limits": {"cpu": "200m", "memory": "64M"},
}

_SUFFIX = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
_QUANTITY = re.compile(r"([0-9.]+(?:[eE][+-]?\d+)?)([a-zA-Z]*)")


def _quantity(value: object) -> Decimal | None:
    """A resource quantity as a number; None for what is not one (the API server refuses those)."""
    m = _QUANTITY.fullmatch(str(value).strip())
    if m is None or m[2] not in _SUFFIX:
        return None
    try:
        return Decimal(m[1]) * _SUFFIX[m[2]]
    except InvalidOperation:
        return None


def pod_qos_class(spec: Mapping[str, Any]) -> QosClass:
    """The pod's QoS class as Kubernetes computes it (``GetPodQOS``, facts I4): over containers and
    init containers, only CPU and memory; Guaranteed when every container has both limits and the
    summed requests equal the summed limits; BestEffort with no request or limit at all."""
    requests: dict[str, Decimal] = {}
    limits: dict[str, Decimal] = {}
    guaranteed = True
    containers = [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    for container in containers:
        resources = container.get("resources") if isinstance(container, Mapping) else None
        resources = resources if isinstance(resources, Mapping) else {}
        found: set[str] = set()
        for kind, into in (("requests", requests), ("limits", limits)):
            values = resources.get(kind)
            for name in ("cpu", "memory"):
                q = _quantity(values.get(name)) if isinstance(values, Mapping) and name in values else None
                if q is not None and q > 0:
                    into[name] = into.get(name, Decimal(0)) + q
                    if kind == "limits":
                        found.add(name)
        if found != {"cpu", "memory"}:
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and requests.keys() == limits.keys() and all(requests[n] == limits[n] for n in requests):
        return "Guaranteed"
    return "Burstable"


def resources_for(qos: QosClass) -> dict[str, dict[str, str]]:
    if qos == "Guaranteed":
        return {k: dict(v) for k, v in GUARANTEED_RESOURCES.items()}
    if qos == "Burstable":
        return {k: dict(v) for k, v in BURSTABLE_RESOURCES.items()}
    return {}


def is_temporary_pod(annotations: Mapping[str, Any]) -> bool:
    """virt-controller's temporary pod for a WaitForFirstConsumer volume: it only gets the PVCs
    bound, its compute runs ``echo`` and exits, and no VM ever runs in it. KubeVirt marks it with
    the annotation's key, whatever its value, and checks only the key (facts I13)."""
    return EPHEMERAL_PROVISIONING in annotations


def is_root_launcher(spec: Mapping[str, Any]) -> bool:
    """virt-controller renders a non-root launcher pod with runAsNonRoot and uid 107 (facts L6)."""
    ctx = spec.get("securityContext")
    return not (isinstance(ctx, Mapping) and ctx.get("runAsNonRoot") is True and ctx.get("runAsUser") != 0)


def fixer_mounts() -> list[dict[str, Any]]:
    """The two mounts the fixer needs: the launcher's libvirt socket directory and the pod's annotations."""
    return [
        # Read-only: the fixer only connects to virtqemud's socket there (docstring above).
        {"name": LIBVIRT_RUNTIME_VOLUME, "mountPath": LIBVIRT_RUNTIME_PATH, "readOnly": True},
        {"name": PODINFO_VOLUME, "mountPath": PODINFO_DIR, "readOnly": True},
    ]


def injected_container(spec: Mapping[str, Any], *, config: WebhookConfig) -> dict[str, Any]:
    """Our container for a non-root launcher pod ``spec``, as it is before we add it: an entry of
    ``spec.initContainers`` (a native sidecar)."""
    args = fixer_args(delivery="inject", prefix=config.keys.prefix, log_format=config.sidecar_log_format)
    command = [*FIXER_COMMAND, *args]
    return {
        "name": INJECTED_CONTAINER,
        "image": config.sidecar_image,
        "imagePullPolicy": config.sidecar_pull_policy,
        "command": command,
        # A native sidecar: restarted by the kubelet, stopped once compute has ended.
        "restartPolicy": "Always",
        # The image sets it too; a custom --sidecar-image may not, and the root is read-only.
        "env": [{"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],
        "securityContext": {
            "runAsUser": LAUNCHER_UID,
            "runAsGroup": LAUNCHER_UID,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "resources": {} if spec.get("resources") else resources_for(pod_qos_class(spec)),
        "volumeMounts": fixer_mounts(),
        # The log tail becomes the termination message if it fails: `kubectl describe pod` shows why.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
