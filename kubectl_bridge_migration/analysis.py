"""What `kubectl bridge-migration analyze` says of each VM and VMI: pure, from the API's objects.

Everything here decides from the JSON objects the API server returned (a :class:`Snapshot`); the
reading is kubectl_bridge_migration/client.py's. Where the webhook already has the rule it is
imported, not written again: which interfaces are ours (``vmi_managed_interfaces``,
``macvtap_left_alone``), the opt-out (``opted_out``), the delivery record (``recorded_delivery``),
the conditions under which a delivery's fixer acts (``missing_fixer``), the hook sidecar entry
(``parse_sidecars``) and the KubeVirt CR's gates (``feature_gates_in``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from bridge_migration_contract import (
    ALLOW_POD_BRIDGE_MIGRATION,
    DEFAULT_KEYS,
    FIXER_COMMAND,
    HOOK_SIDECARS,
    INJECTED_CONTAINER,
    AnnotationKeys,
    Delivery,
    macvtap_left_alone,
    parse_delivery,
    vmi_managed_interfaces,
)
from webhook.delivery import KubeVirtGates, missing_fixer, recorded_delivery
from webhook.hook_sidecars import MalformedSidecarsError, parse_sidecars
from webhook.kube import feature_gates_in, observed_kubevirt_version_in
from webhook.vm_mutation import opted_out

Kind = Literal["VirtualMachine", "VirtualMachineInstance"]
# The labels virt-controller puts on every launcher pod (kubelab/fake_virt_controller.py, facts L2).
CREATED_BY_LABEL = "kubevirt.io/created-by"
VM_NAME_LABEL = "vm.kubevirt.io/name"
# The chart's node agent pods (charts/bridge-migration/templates/_helpers.tpl, nodeAgentSelectorLabels).
NODE_AGENT_SELECTOR = "app.kubernetes.io/component=node-agent,app.kubernetes.io/part-of=kubevirt-bridge-migration"
NODE_AGENT_CONTAINER = "node-agent"
# An Event counts as a fixup outcome of ours when its reason starts with this, or when the component
# that reported it is ours.
EVENT_REASON_PREFIX = "BridgeMigration"
EVENT_COMPONENT_PREFIX = "bridge-migration"


@dataclass(frozen=True)
class Snapshot:
    """What analyze reads from the API: lists' ``items`` (plain JSON objects)."""

    vms: Sequence[Mapping[str, Any]] = ()
    vmis: Sequence[Mapping[str, Any]] = ()
    pods: Sequence[Mapping[str, Any]] = ()  # launcher pods (label kubevirt.io=virt-launcher)
    events: Sequence[Mapping[str, Any]] = ()  # Events about VMIs
    kubevirts: Sequence[Mapping[str, Any]] | None = None  # None: could not be read (RBAC, no CRD)
    node_agent_pods: Sequence[Mapping[str, Any]] = ()
    node_agent_deployed: bool = False  # a node agent DaemonSet exists


@dataclass(frozen=True)
class Row:
    namespace: str
    name: str
    kind: Kind
    managed: str
    migratable: str
    delivery: str
    fixer: str
    last: str
    stranded: bool
    why: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


COLUMNS = ("NAMESPACE", "NAME", "KIND", "MANAGED", "MIGRATABLE", "DELIVERY", "FIXER", "LAST", "STRANDED-ON-DRAIN")
_SHORT_KIND = {"VirtualMachine": "vm", "VirtualMachineInstance": "vmi"}


def meta_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def annotations_of(obj: Mapping[str, Any] | None) -> Mapping[str, str]:
    ann = meta_of(obj).get("annotations") if isinstance(obj, Mapping) else None
    return {k: v for k, v in ann.items() if isinstance(v, str)} if isinstance(ann, Mapping) else {}


def _template(vm: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = vm.get("spec")
    template = spec.get("template") if isinstance(spec, Mapping) else None
    return template if isinstance(template, Mapping) else {}


def _conditions(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    status = obj.get("status")
    conds = status.get("conditions") if isinstance(status, Mapping) else None
    return [c for c in conds if isinstance(c, Mapping)] if isinstance(conds, list) else []


def _condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    return next((c for c in _conditions(obj) if c.get("type") == kind), None)


def gates_of(snapshot: Snapshot) -> tuple[frozenset[str] | None, KubeVirtGates]:
    """The KubeVirt CR's feature gates (None: the CR could not be read) and the webhook's view of them."""
    if snapshot.kubevirts is None:
        return None, KubeVirtGates()
    listing = {"items": list(snapshot.kubevirts)}
    gates = feature_gates_in(listing)
    return gates, KubeVirtGates(
        plugins="Plugins" in gates, root="Root" in gates, version=observed_kubevirt_version_in(listing)
    )


def is_our_entry(entry: Mapping[str, Any]) -> bool:
    """Our hook sidecar entry: the fixer's command (the image repository is the install's choice)."""
    command = entry.get("command")
    return isinstance(command, list) and tuple(command[: len(FIXER_COMMAND)]) == FIXER_COMMAND


def delivery_of(annotations: Mapping[str, str], keys: AnnotationKeys) -> Delivery | None:
    """``inject``/``node`` from our record, ``hook`` from our hookSidecars entry, None for neither."""
    recorded = recorded_delivery(annotations, keys)
    if recorded is not None:
        return recorded
    try:
        entries = parse_sidecars(annotations.get(HOOK_SIDECARS))
    except MalformedSidecarsError:
        return None
    if any(is_our_entry(e) for e in entries):
        return "hook"
    # A user's explicit "hook" with no entry (the webhook refused to add one): say hook all the same.
    return "hook" if parse_delivery(annotations.get(keys.delivery)) == "hook" else None


def _managed(spec_holder: Mapping[str, Any], opt_out: str | None, keys: AnnotationKeys) -> tuple[str, bool, bool]:
    """(the MANAGED cell, whether any interface is ours, whether a bridge NIC is on the pod network)."""
    ifaces = vmi_managed_interfaces(spec_holder, keys)
    pod_bridge = any(i["binding"] == "bridge" and i["network"] == "pod" for i in ifaces)
    if opt_out is not None:
        return f"no (opted out: {opt_out})", bool(ifaces), pod_bridge
    if ifaces:
        return ",".join(i["name"] for i in ifaces), True, pod_bridge
    spec = spec_holder.get("spec")
    left = macvtap_left_alone(spec if isinstance(spec, Mapping) else {})
    if any(why == "core" for _, why in left):
        return "no (core macvtap)", False, False
    if left:
        return "no (macvtap on the pod network)", False, False
    return "no (no bridge/macvtap)", False, False


def _opt_out_where(pairs: Sequence[tuple[str, Mapping[str, Any] | None]], keys: AnnotationKeys) -> str | None:
    return next((where for where, obj in pairs if obj is not None and opted_out(obj, keys)), None)


def _gate_fixer(
    delivery: Delivery | None,
    annotations: Mapping[str, str],
    gates: frozenset[str] | None,
    kubevirt: KubeVirtGates,
    *,
    node_agent: bool,
) -> tuple[bool, str]:
    """Whether the fixer ``delivery`` names will act, judged from KubeVirt's gates and the install."""
    if delivery is None:
        return False, "no hook entry or delivery record"
    if delivery == "hook":
        if gates is None:
            return False, "hook: Sidecar gate unknown (KubeVirt CR unreadable)"
        return ("Sidecar" in gates), f"hook: Sidecar gate {'on' if 'Sidecar' in gates else 'off'}"
    nofixer = missing_fixer(delivery, annotations, node_agent=node_agent, kubevirt=kubevirt)
    if nofixer is not None:
        return False, f"{delivery}: {nofixer.why}"
    return True, f"{delivery}: {'Plugins gate on, agent deployed' if delivery == 'node' else 'no gate needed'}"


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    cond = _condition(pod, "Ready")
    return cond is not None and cond.get("status") == "True"


def launcher_pods(vmi: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The VMI's launcher pods that are not finished: by ``kubevirt.io/created-by`` (the VMI's uid),
    or, for a pod without it, by ``vm.kubevirt.io/name`` and ``kubevirt.io/domain``."""
    meta = meta_of(vmi)
    uid, name, ns = meta.get("uid"), meta.get("name"), meta.get("namespace")
    out = []
    for pod in pods:
        pmeta = meta_of(pod)
        if pmeta.get("namespace") != ns:
            continue
        labels = pmeta.get("labels") if isinstance(pmeta.get("labels"), Mapping) else {}
        assert isinstance(labels, Mapping)
        ours = labels.get(CREATED_BY_LABEL) == uid if uid and CREATED_BY_LABEL in labels else False
        if not ours and CREATED_BY_LABEL not in labels:
            ours = labels.get(VM_NAME_LABEL) == name
        status = pod.get("status")
        phase = status.get("phase") if isinstance(status, Mapping) else None
        if ours and phase not in ("Succeeded", "Failed"):
            out.append(pod)
    return out


def _containers(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    spec = pod.get("spec")
    if not isinstance(spec, Mapping):
        return []
    both = [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    return [c for c in both if isinstance(c, Mapping)]


def fixer_container(pod: Mapping[str, Any]) -> tuple[Delivery, str] | None:
    """Our fixer's container in a launcher pod: ``bridge-migration`` (inject), or a hook sidecar
    running the fixer's command (hook)."""
    for c in _containers(pod):
        if c.get("name") == INJECTED_CONTAINER:
            return "inject", INJECTED_CONTAINER
    for c in _containers(pod):
        name = c.get("name")
        if isinstance(name, str) and name.startswith("hook-sidecar-") and is_our_entry(c):
            return "hook", name
    return None


def vmi_node(vmi: Mapping[str, Any]) -> str | None:
    status = vmi.get("status")
    node = status.get("nodeName") if isinstance(status, Mapping) else None
    return node if isinstance(node, str) and node else None


def node_agent_on(node: str | None, pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The node agent pod on ``node`` that is Ready (the first one), None without one."""
    for pod in pods:
        spec = pod.get("spec")
        if node and isinstance(spec, Mapping) and spec.get("nodeName") == node and _pod_ready(pod):
            return pod
    return None


def _vmi_fixer(
    vmi: Mapping[str, Any], delivery: Delivery | None, snapshot: Snapshot, gate: tuple[bool, str]
) -> tuple[bool, str]:
    """For a VMI: our container on its launcher pod, or the node agent Ready on its node, and the gate."""
    if delivery == "node":
        if not gate[0]:
            return gate
        node = vmi_node(vmi)
        if node_agent_on(node, snapshot.node_agent_pods) is None:
            return False, f"node: no Ready node agent on {node or '(no node)'}"
        return True, f"node: agent Ready on {node}"
    pods = launcher_pods(vmi, snapshot.pods)
    if not pods:
        return False, "no launcher pod"
    found = [f for f in (fixer_container(p) for p in pods) if f is not None]
    if len(found) < len(pods):
        return False, "no container of ours on its launcher pod"
    if not gate[0]:
        return gate
    kinds = sorted({f"{d}: container {c}" for d, c in found})
    return True, ", ".join(kinds)


def _event_time(event: Mapping[str, Any]) -> str:
    for key in ("lastTimestamp", "eventTime", "firstTimestamp"):
        value = event.get(key)
        if isinstance(value, str) and value:
            return value
    created = meta_of(event).get("creationTimestamp")
    return created if isinstance(created, str) else ""


def _is_ours(event: Mapping[str, Any]) -> bool:
    reason = event.get("reason")
    source = event.get("source")
    components = [event.get("reportingComponent"), source.get("component") if isinstance(source, Mapping) else None]
    return (isinstance(reason, str) and reason.startswith(EVENT_REASON_PREFIX)) or any(
        isinstance(c, str) and c.startswith(EVENT_COMPONENT_PREFIX) for c in components
    )


def last_outcome(vmi: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> str:
    """The reason (and message) of the newest Event of ours about this VMI; ``-`` without one."""
    meta = meta_of(vmi)
    mine = []
    for ev in events:
        involved = ev.get("involvedObject")
        if not isinstance(involved, Mapping) or involved.get("kind") != "VirtualMachineInstance":
            continue
        same = involved.get("name") == meta.get("name") and involved.get(
            "namespace", meta.get("namespace")
        ) == meta.get("namespace")
        if same and (not involved.get("uid") or involved.get("uid") == meta.get("uid")) and _is_ours(ev):
            mine.append(ev)
    if not mine:
        return "-"
    newest = max(mine, key=_event_time)
    message = newest.get("message")
    reason = str(newest.get("reason") or "?")
    return f"{reason}: {message}" if isinstance(message, str) and message else reason


def _migratable(annotations: Mapping[str, str], ours: bool, pod_bridge: bool) -> bool:
    """What KubeVirt does on a drain: migrate a VM whose pod-network bridge NIC carries the allow
    annotation; Multus bridges and the macvtap plugin migrate anyway."""
    if not ours:
        return False
    return ALLOW_POD_BRIDGE_MIGRATION in annotations if pod_bridge else True


def analyze_vm(vm: Mapping[str, Any], snapshot: Snapshot, keys: AnnotationKeys = DEFAULT_KEYS) -> Row:
    meta, template = meta_of(vm), _template(vm)
    ann = annotations_of(template)
    where = _opt_out_where([("VM", vm), ("template", template)], keys)
    managed, ours, pod_bridge = _managed(template, where, keys)
    migratable = _migratable(ann, ours, pod_bridge)
    delivery = delivery_of(ann, keys)
    gates, kubevirt = gates_of(snapshot)
    acts, fixer = _gate_fixer(delivery, ann, gates, kubevirt, node_agent=snapshot.node_agent_deployed)
    why = []
    if migratable and not acts:
        why.append(f"migratable with no fixer that will act ({fixer})")
    restart = _condition(vm, "RestartRequired")
    if restart is not None and restart.get("status") == "True":
        why.append("RestartRequired: " + str(restart.get("message") or "the running VMI differs from the template"))
    return Row(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        kind="VirtualMachine",
        managed=managed,
        migratable=("yes" if migratable else "no") if ours else "-",
        delivery=delivery or "-",
        fixer=("yes" if acts else "no") + f" ({fixer})" if ours else "-",
        last="-",
        stranded=bool(why),
        why=why,
    )


def _vm_of(vmi: Mapping[str, Any], vms: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    meta = meta_of(vmi)
    refs = meta.get("ownerReferences")
    for ref in refs if isinstance(refs, list) else []:
        if isinstance(ref, Mapping) and ref.get("kind") == "VirtualMachine" and ref.get("controller") is True:
            for vm in vms:
                vmeta = meta_of(vm)
                if vmeta.get("namespace") == meta.get("namespace") and vmeta.get("name") == ref.get("name"):
                    return vm
    return None


def analyze_vmi(vmi: Mapping[str, Any], snapshot: Snapshot, keys: AnnotationKeys = DEFAULT_KEYS) -> Row:
    meta = meta_of(vmi)
    ann = annotations_of(vmi)
    where = _opt_out_where([("VM", _vm_of(vmi, snapshot.vms)), ("VMI", vmi)], keys)
    managed, ours, pod_bridge = _managed(vmi, where, keys)
    migratable = _migratable(ann, ours, pod_bridge)
    cell = "yes" if migratable else "no"
    cond = _condition(vmi, "LiveMigratable")
    if cond is not None:
        migratable = cond.get("status") == "True"
        cell = "yes" if migratable else f"no ({cond.get('reason') or 'LiveMigratable False'})"
    delivery = delivery_of(ann, keys)
    gates, kubevirt = gates_of(snapshot)
    gate = _gate_fixer(delivery, ann, gates, kubevirt, node_agent=snapshot.node_agent_deployed)
    acts, fixer = _vmi_fixer(vmi, delivery, snapshot, gate) if delivery is not None else gate
    # A VMI that is not running (no launcher pod yet, or stopped) has nothing a drain would move.
    status = vmi.get("status")
    running = (status.get("phase") if isinstance(status, Mapping) else None) == "Running" or bool(
        launcher_pods(vmi, snapshot.pods)
    )
    stranded = ours and migratable and not acts and running
    why = [f"migratable with no fixer that will act ({fixer})"] if stranded else []
    return Row(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        kind="VirtualMachineInstance",
        managed=managed,
        migratable=cell if ours else "-",
        delivery=delivery or "-",
        fixer=("yes" if acts else "no") + f" ({fixer})" if ours else "-",
        last=last_outcome(vmi, snapshot.events),
        stranded=bool(why),
        why=why,
    )


def analyze(snapshot: Snapshot, keys: AnnotationKeys = DEFAULT_KEYS) -> list[Row]:
    """One row per VM and per VMI, sorted by namespace, name, VM before VMI."""
    rows = [analyze_vm(vm, snapshot, keys) for vm in snapshot.vms]
    rows += [analyze_vmi(vmi, snapshot, keys) for vmi in snapshot.vmis]
    return sorted(rows, key=lambda r: (r.namespace, r.name, r.kind != "VirtualMachine"))


def render_table(rows: Sequence[Row]) -> str:
    """kubectl's plain table: upper-case headers, columns padded by three spaces."""
    cells = [list(COLUMNS)]
    for r in rows:
        stranded = "yes" if r.stranded else "no"
        cells.append(
            [r.namespace, r.name, _SHORT_KIND[r.kind], r.managed, r.migratable, r.delivery, r.fixer, r.last, stranded]
        )
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ["   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines) + "\n"


def render_json(rows: Sequence[Row]) -> str:
    stranded = sum(r.stranded for r in rows)
    return json.dumps({"items": [r.as_json() for r in rows], "stranded": stranded}, indent=2) + "\n"
