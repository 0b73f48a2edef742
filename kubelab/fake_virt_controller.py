"""A FAKE of KubeVirt's virt-controller launcher-pod rendering: a stand-in, not KubeVirt.

``render_launcher_pod`` builds the virt-launcher pod virt-controller would create for a stored VMI,
for the parts the project touches, so the kube tests run VMI -> rendered pod -> our pod mutation on
KubeVirt's shapes rather than on hand-made pods. Each detail was checked in kubevirt/kubevirt's
``pkg/virt-controller/services/`` (template.go, rendercontainer.go, rendervolumes.go,
renderresources.go) at v1.5.0 and v1.9.0 (docs/kubevirt-facts.md H1-H5, L2, L6, L7):

* containers: ``compute`` first, then ``hook-sidecar-<i>`` per entry of the VMI's
  ``hooks.kubevirt.io/hookSidecars`` annotation, with the entry's image, imagePullPolicy, command
  and args;
* the ``hook-sidecar-sockets`` emptyDir at ``/var/run/kubevirt-hooks``: compute mounts the whole
  directory; from v1.6 each sidecar mounts it with ``subPath: hook-sidecar-<i>`` and gets
  ``CONTAINER_NAME``, in v1.5 all sidecars share the directory;
* ``libvirt-runtime`` (emptyDir) mounted in compute only, at ``/var/run/libvirt``, beside
  KubeVirt's other standard volumes;
* the non-root security context (uid/gid 107, runAsNonRoot, no privilege escalation, drop ALL;
  ``privileged: false`` written out up to v1.6) and the XDG variables of a non-root container;
* sidecar resources: requests = limits = 200m CPU / 64M memory for a VMI with dedicated CPUs or
  one that wants Guaranteed QoS, none otherwise (no ``supportContainerResources`` in the CR);
* labels (the VMI's, then ``kubevirt.io``, ``kubevirt.io/created-by``, ``vm.kubevirt.io/name``,
  from v1.7 ``vmi.kubevirt.io/id``) and annotations (``kubevirt.io/domain``, the VMI's without
  the filtered prefixes, then virt-controller's own);
* a migration target: label ``kubevirt.io/migrationJobUID``, annotation
  ``kubevirt.io/migrationJobName`` (``pkg/virt-controller/watch/migration/migration.go``);
* ``guest-console-log`` (on by default, ``serialconsolelog.go``): from v1.6 a native sidecar, the
  first init container; in v1.5 a regular container after compute (facts I9);
* the temporary pod of a WaitForFirstConsumer volume (``temp_pod``): the same pod plus the
  annotation ``kubevirt.io/ephemeral-provisioning: "true"``, compute running ``/bin/bash -c echo
  "bound PVCs"`` (facts I13).

And what virt-controller reads back from a pod's status (``pkg/controller/controller.go``,
facts I7, I8, I11): ``is_pod_ready`` (``IsPodReady``), ``vmi_ready`` (``syncReadyConditionFromPod``),
``active_pods`` (``VMIActivePodsCount``, which ``handleTargetPodCreation`` needs at 1 to start a
migration). kubelab/fake_kubelet.py makes those statuses.

Left out, as nothing of ours reads them: compute's real command line, its computed resources
(memory overhead; the VMI's own requests and limits are copied instead), the container-disk and
kernel-boot init containers, probes, node selectors and affinity, network and istio annotations,
the hotplug details.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from bridge_migration_contract import (
    DOMAIN_ANNOTATION,
    HOOK_SIDECARS,
    HOOK_SOCKET_DIR,
    LIBVIRT_RUNTIME_PATH,
    LIBVIRT_RUNTIME_VOLUME,
    MIGRATION_JOB_NAME_ANNOTATION,
    MIGRATION_JOB_UID_LABEL,
)

NON_ROOT_UID: Final = 107
HOOK_SIDECAR_SOCKETS: Final = "hook-sidecar-sockets"
GUEST_CONSOLE_LOG: Final = "guest-console-log"
EPHEMERAL_PROVISIONING: Final = "kubevirt.io/ephemeral-provisioning"  # EphemeralProvisioningObject
TEMP_POD_COMMAND: Final = ("/bin/bash", "-c", "echo", "bound PVCs")
LAUNCHER_IMAGE: Final = "quay.io/kubevirt/virt-launcher"
SIDECAR_CPU: Final = "200m"
SIDECAR_MEMORY: Final = "64M"
_FILTERED_PREFIXES: Final = (
    "kubectl.kubernetes.io",
    "kubevirt.io/storage-observed-api-version",
    "kubevirt.io/latest-observed-api-version",
)
_VIRT_PRIVATE_DIR: Final = "/var/run/kubevirt-private"
_VIRT_SHARE_DIR: Final = "/var/run/kubevirt"


def _minor(version: str) -> int:
    m = re.fullmatch(r"v?1\.(\d+)(?:\.\d+)?(?:[-+].*)?", version.strip())
    if m is None:
        raise ValueError(f"not a KubeVirt v1.x version: {version!r}")
    return int(m[1])


_SUFFIXES: Final[dict[str, Decimal | int]] = {
    "": 1,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def parse_quantity(value: str | int | float) -> Decimal:
    """A Kubernetes resource quantity as a number (enough of ``resource.Quantity`` to compare two)."""
    text = str(value).strip()
    m = re.fullmatch(r"([+-]?[0-9.]+(?:[eE][+-]?\d+)?)([a-zA-Z]*)", text)
    if m is None or m[2] not in _SUFFIXES:
        raise ValueError(f"not a quantity: {value!r}")
    return Decimal(m[1]) * Decimal(_SUFFIXES[m[2]])


def _quantity(resources: Mapping[str, Any], kind: str, name: str) -> Decimal:
    raw = (resources.get(kind) or {}).get(name)
    return Decimal(0) if raw is None else parse_quantity(raw)


def wants_guaranteed_qos(vmi: Mapping[str, Any], *, kubevirt_version: str = "v1.9.0") -> bool:
    """KubeVirt's ``WantsToHaveQOSGuaranteed``: CPU request = limit and memory request = limit, both
    requests non-zero; from v1.7 a memory limit without a memory request also counts."""
    resources = ((vmi.get("spec") or {}).get("domain") or {}).get("resources") or {}
    mem_req = _quantity(resources, "requests", "memory")
    mem_lim = _quantity(resources, "limits", "memory")
    cpu_req = _quantity(resources, "requests", "cpu")
    cpu_lim = _quantity(resources, "limits", "cpu")
    memory = mem_req != 0 and mem_req == mem_lim
    if _minor(kubevirt_version) >= 7:
        memory = memory or (mem_req == 0 and mem_lim != 0)
    return memory and cpu_req != 0 and cpu_req == cpu_lim


def dedicated_cpus(vmi: Mapping[str, Any]) -> bool:
    cpu = ((vmi.get("spec") or {}).get("domain") or {}).get("cpu") or {}
    return bool(cpu.get("dedicatedCpuPlacement"))


def sidecar_resources(vmi: Mapping[str, Any], *, kubevirt_version: str = "v1.9.0") -> dict[str, Any]:
    """``sidecarResources`` with no ``supportContainerResources`` configured."""
    if dedicated_cpus(vmi) or wants_guaranteed_qos(vmi, kubevirt_version=kubevirt_version):
        both = {"cpu": SIDECAR_CPU, "memory": SIDECAR_MEMORY}
        return {"requests": dict(both), "limits": dict(both)}
    return {}


def _security_context(*, minor: int, non_root: bool, add: list[str] | None = None) -> dict[str, Any]:
    uid = NON_ROOT_UID if non_root else 0
    ctx: dict[str, Any] = {"runAsUser": uid, "runAsNonRoot": non_root}
    if minor <= 6:
        ctx["privileged"] = False
    caps: dict[str, Any] = {}
    if add:
        caps["add"] = add
    if non_root:
        caps["drop"] = ["ALL"]
        ctx["runAsGroup"] = uid
        ctx["allowPrivilegeEscalation"] = False
    if caps:
        ctx["capabilities"] = caps
    return ctx


def _xdg_env() -> list[dict[str, Any]]:
    return [
        {"name": "XDG_CACHE_HOME", "value": _VIRT_PRIVATE_DIR},
        {"name": "XDG_CONFIG_HOME", "value": _VIRT_PRIVATE_DIR},
        {"name": "XDG_RUNTIME_DIR", "value": "/var/run"},
    ]


def hook_sidecar_entries(vmi: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The VMI's hookSidecars entries (virt-controller fails the pod on a malformed list: so do we)."""
    raw = ((vmi.get("metadata") or {}).get("annotations") or {}).get(HOOK_SIDECARS)
    if not raw:
        return []
    entries = json.loads(raw)
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{HOOK_SIDECARS} is not a list of objects: {raw!r}")
    return entries


def _sidecar_container(
    index: int, entry: Mapping[str, Any], vmi: Mapping[str, Any], *, minor: int, non_root: bool, version: str
) -> dict[str, Any]:
    name = f"hook-sidecar-{index}"
    mount: dict[str, Any] = {"name": HOOK_SIDECAR_SOCKETS, "mountPath": HOOK_SOCKET_DIR}
    env = _xdg_env() if non_root else []
    if minor >= 6:
        mount["subPath"] = name
        env.append({"name": "CONTAINER_NAME", "value": name})
    container: dict[str, Any] = {
        "name": name,
        "image": entry.get("image") or "quay.io/kubevirt/sidecar-shim",
        "securityContext": _security_context(minor=minor, non_root=non_root),
        "volumeMounts": [mount],
        "resources": sidecar_resources(vmi, kubevirt_version=version),
    }
    if entry.get("imagePullPolicy"):
        container["imagePullPolicy"] = entry["imagePullPolicy"]
    if entry.get("command"):
        container["command"] = list(entry["command"])
    if entry.get("args"):
        container["args"] = list(entry["args"])
    if env:
        container["env"] = env
    if minor >= 6:
        container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    return container


def _compute_container(vmi: Mapping[str, Any], *, minor: int, non_root: bool, sidecars: int) -> dict[str, Any]:
    meta = vmi.get("metadata") or {}
    mounts = [
        {"name": "private", "mountPath": _VIRT_PRIVATE_DIR},
        {"name": "public", "mountPath": _VIRT_SHARE_DIR},
        {"name": "ephemeral-disks", "mountPath": _VIRT_SHARE_DIR + "-ephemeral-disks"},
    ]
    container_disks = {
        "name": "container-disks",
        "mountPath": _VIRT_SHARE_DIR + "/container-disks",
        "mountPropagation": "HostToContainer",
    }
    if minor < 6:
        mounts.append(container_disks)
    mounts += [
        {"name": LIBVIRT_RUNTIME_VOLUME, "mountPath": LIBVIRT_RUNTIME_PATH},
        {"name": "sockets", "mountPath": _VIRT_SHARE_DIR + "/sockets"},
    ]
    if minor >= 6:
        mounts.append(container_disks)
    if sidecars:
        mounts.append({"name": HOOK_SIDECAR_SOCKETS, "mountPath": HOOK_SOCKET_DIR})
    env = _xdg_env() if non_root else []
    env.append({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    resources = ((vmi.get("spec") or {}).get("domain") or {}).get("resources") or {}
    container: dict[str, Any] = {
        "name": "compute",
        "image": f"{LAUNCHER_IMAGE}:v1.{minor}.0",
        # Cut to the flags that say something about the pod's shape.
        "command": [
            "/usr/bin/virt-launcher-monitor",
            "--name",
            str(meta.get("name", "")),
            "--uid",
            str(meta.get("uid", "")),
            "--namespace",
            str(meta.get("namespace", "")),
            "--hook-sidecars",
            str(sidecars),
        ],
        "securityContext": _security_context(
            minor=minor, non_root=non_root, add=["NET_BIND_SERVICE"] if non_root else ["NET_BIND_SERVICE", "SYS_NICE"]
        ),
        "volumeMounts": mounts,
        "env": env,
        "resources": {k: dict(v) for k, v in resources.items() if k in ("requests", "limits") and v},
    }
    if minor >= 6:
        container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    return container


def _console_log_resources(vmi: Mapping[str, Any], *, kubevirt_version: str) -> dict[str, Any]:
    """``resourcesForSerialConsoleLogContainer`` without ``supportContainerResources``."""
    requests = {"cpu": "5m", "memory": "35M"}
    limits = {"cpu": "15m", "memory": "60M"}
    if dedicated_cpus(vmi) or wants_guaranteed_qos(vmi, kubevirt_version=kubevirt_version):
        requests = dict(limits)
    return {"requests": requests, "limits": limits}


def _console_log_container(vmi: Mapping[str, Any], *, minor: int, kubevirt_version: str) -> dict[str, Any]:
    """``generateSerialConsoleLogContainer``: a native sidecar from v1.6, a regular container before."""
    uid = str((vmi.get("metadata") or {}).get("uid", ""))
    container: dict[str, Any] = {
        "name": GUEST_CONSOLE_LOG,
        "image": f"{LAUNCHER_IMAGE}:v1.{minor}.0",
        "imagePullPolicy": "IfNotPresent",
        "command": ["/usr/bin/virt-tail"],
        "args": ["--logfile", f"{_VIRT_PRIVATE_DIR}/{uid}/virt-serial0-log"],
        "volumeMounts": [{"name": "private", "mountPath": _VIRT_PRIVATE_DIR, "readOnly": True}],
        "resources": _console_log_resources(vmi, kubevirt_version=kubevirt_version),
        "securityContext": {
            "runAsUser": NON_ROOT_UID,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "env": [{"name": "VIRT_LAUNCHER_LOG_VERBOSITY", "value": "2"}],
    }
    if minor >= 6:
        container["restartPolicy"] = "Always"
    return container


def _labels(vmi: Mapping[str, Any], *, minor: int) -> dict[str, str]:
    meta = vmi.get("metadata") or {}
    name = str(meta.get("name", ""))
    spec = vmi.get("spec") or {}
    hostname = spec.get("hostname") or name.split(".", maxsplit=1)[0][:63]
    labels = dict(meta.get("labels") or {})
    labels["kubevirt.io"] = "virt-launcher"
    labels["kubevirt.io/created-by"] = str(meta.get("uid", ""))
    labels["vm.kubevirt.io/name"] = hostname
    if minor >= 7:
        # CalculateVirtualMachineInstanceID: the name itself up to 63 characters (longer: hashed).
        labels["vmi.kubevirt.io/id"] = (
            name if len(name) <= 63 else f"{name[:54]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
        )
    return labels


def _annotations(vmi: Mapping[str, Any]) -> dict[str, str]:
    meta = vmi.get("metadata") or {}
    ann = {DOMAIN_ANNOTATION: str(meta.get("name", ""))}
    ann.update({k: v for k, v in (meta.get("annotations") or {}).items() if not k.startswith(_FILTERED_PREFIXES)})
    ann["kubectl.kubernetes.io/default-container"] = "compute"
    ann["kubevirt.io/migrationTransportUnix"] = "true"
    ann["descheduler.alpha.kubernetes.io/request-evict-only"] = ""
    return ann


def render_launcher_pod(
    vmi: Mapping[str, Any],
    *,
    kubevirt_version: str = "v1.9.0",
    name: str | None = None,
    migration: Mapping[str, str] | None = None,
    non_root: bool = True,
    serial_console_log: bool = True,
    temp_pod: bool = False,
) -> dict[str, Any]:
    """The virt-launcher pod for ``vmi`` (as stored: with its uid), as KubeVirt ``kubevirt_version``
    renders it. ``name`` replaces virt-controller's ``generateName`` so a test can find the pod;
    ``migration`` (``{"name": ..., "uid": ...}``) makes it the target pod of that migration.
    ``non_root`` is virt-controller's default (the VMI's ``status.runtimeUser`` 107);
    ``serial_console_log`` KubeVirt's default too (no ``disableSerialConsoleLog``); ``temp_pod``
    renders the temporary pod of a WaitForFirstConsumer volume (``RenderLaunchManifestNoVm``)."""
    minor = _minor(kubevirt_version)
    meta = vmi.get("metadata") or {}
    vmi_name = str(meta.get("name", ""))
    entries = hook_sidecar_entries(vmi)
    compute = _compute_container(vmi, minor=minor, non_root=non_root, sidecars=len(entries))
    if temp_pod:
        compute["command"] = list(TEMP_POD_COMMAND)
    containers = [compute]
    init_containers: list[dict[str, Any]] = []
    if serial_console_log:
        console_log = _console_log_container(vmi, minor=minor, kubevirt_version=kubevirt_version)
        (init_containers if minor >= 6 else containers).append(console_log)
    containers += [
        _sidecar_container(i, e, vmi, minor=minor, non_root=non_root, version=kubevirt_version)
        for i, e in enumerate(entries)
    ]
    volumes: list[dict[str, Any]] = [
        {"name": v, "emptyDir": {}}
        for v in ("private", "public", "sockets", "virt-bin-share-dir", LIBVIRT_RUNTIME_VOLUME, "ephemeral-disks")
    ]
    volumes.append({"name": "container-disks", "emptyDir": {}})
    if entries:
        volumes.append({"name": HOOK_SIDECAR_SOCKETS, "emptyDir": {}})
    labels = _labels(vmi, minor=minor)
    annotations = _annotations(vmi)
    if temp_pod:
        annotations[EPHEMERAL_PROVISIONING] = "true"
    if migration is not None:
        labels[MIGRATION_JOB_UID_LABEL] = migration["uid"]
        annotations[MIGRATION_JOB_NAME_ANNOTATION] = migration["name"]
    metadata: dict[str, Any] = {
        "generateName": f"virt-launcher-{vmi_name}-",
        "namespace": meta.get("namespace"),
        "labels": labels,
        "annotations": annotations,
        "ownerReferences": [
            {
                "apiVersion": "kubevirt.io/v1",
                "kind": "VirtualMachineInstance",
                "name": vmi_name,
                "uid": meta.get("uid"),
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if name is not None:
        metadata["name"] = name
    # fsGroup 107: for a non-root pod always; for a root pod too from v1.9 (for virtiofsd).
    pod_security: dict[str, Any] = {"fsGroup": NON_ROOT_UID} if non_root or minor >= 9 else {}
    if non_root:
        pod_security.update({"runAsUser": NON_ROOT_UID, "runAsGroup": NON_ROOT_UID, "runAsNonRoot": True})
    else:
        pod_security["runAsUser"] = 0
    spec: dict[str, Any] = {
        "hostname": labels["vm.kubevirt.io/name"],
        "securityContext": pod_security,
        "restartPolicy": "Never",
        "containers": containers,
        "volumes": volumes,
        "readinessGates": [{"conditionType": "kubevirt.io/virtual-machine-unpaused"}],
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
    }
    if init_containers:
        spec["initContainers"] = init_containers
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


# --- what virt-controller reads back from the pod's status ---------------------------------------


def _compute_status(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return next((s for s in statuses if s.get("name") == "compute"), None)


def is_pod_down_or_going_down(pod: Mapping[str, Any]) -> bool:
    """``IsPodDownOrGoingDown``: the phase Succeeded or Failed, compute terminated, or deleting."""
    compute = _compute_status(pod)
    compute_down = compute is not None and "terminated" in (compute.get("state") or {})
    phase = (pod.get("status") or {}).get("phase")
    return (
        phase in ("Succeeded", "Failed") or compute_down or bool((pod.get("metadata") or {}).get("deletionTimestamp"))
    )


def is_pod_ready(pod: Mapping[str, Any]) -> bool:
    """``IsPodReady``: only ``status.containerStatuses`` (regular containers) count, never the init
    containers': compute and istio-proxy Running, every other container Ready; the phase Running."""
    if is_pod_down_or_going_down(pod):
        return False
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        if cs.get("name") in ("compute", "istio-proxy"):
            if "running" not in (cs.get("state") or {}):
                return False
        elif not cs.get("ready"):
            return False
    return status.get("phase") == "Running"


def vmi_ready(pod: Mapping[str, Any]) -> bool:
    """The VMI's Ready condition from its pod (``syncReadyConditionFromPod``, for a VMI whose guest
    runs): False for a temporary pod or a pod down or going down, else the pod's Ready condition."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if EPHEMERAL_PROVISIONING in annotations or is_pod_down_or_going_down(pod):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    return ready is not None and ready.get("status") == "True"


def active_pods(pods: list[Mapping[str, Any]], vmi: Mapping[str, Any]) -> int:
    """``VMIActivePodsCount``: pods the VMI controls whose phase is neither Succeeded nor Failed.
    ``handleTargetPodCreation`` creates no migration target pod while this is above 1."""
    uid = (vmi.get("metadata") or {}).get("uid")
    return sum(
        1
        for pod in pods
        if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        and any(
            ref.get("uid") == uid and ref.get("controller")
            for ref in (pod.get("metadata") or {}).get("ownerReferences") or []
        )
    )
