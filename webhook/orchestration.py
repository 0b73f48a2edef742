"""Admitting one review, behind the HTTP routes: read the API where a decision needs it, hand
the objects to the pure deciders (vmi_mutation, vm_mutation, pod_mutation, migration_validation),
and keep each endpoint's stance when the answer is late or a bug raises.

Nothing here knows HTTP: ``webhook.app`` parses the body, calls one of these and writes the answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bridge_migration_contract import DOMAIN_ANNOTATION, MIGRATION_JOB_UID_LABEL, vmi_managed_interfaces
from webhook.admission import Review
from webhook.config import WebhookConfig
from webhook.decision import WARN_PREFIX, Decision
from webhook.delivery import KubeVirtGates
from webhook.kube import InvalidNameError, KubeClient, KubeError, NotFoundError, SidecarGateCache
from webhook.macs import non_unicast_macs, unicast_mac, vm_template_as_vmi
from webhook.metrics import WebhookMetrics
from webhook.migration_validation import kubevirt_initiated, validate_migration
from webhook.pod_mutation import TARGET_POD_WAITS, mutate_launcher_pod
from webhook.tls import ReloadingTLS
from webhook.vm_mutation import VmOwner, mutate_vm, opt_out_note, opted_out, vm_owner
from webhook.vmi_mutation import mutate_vmi, restore_dropped_macs

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What admitting needs besides the review: the config, the API and its cached reads, and for
    the HTTP shell its TLS and metrics. Built by ``webhook.server``, replaceable in tests."""

    config: WebhookConfig
    gate: SidecarGateCache
    kube: KubeClient | None = None
    tls: ReloadingTLS | None = None
    metrics: WebhookMetrics | None = None


Decider = Callable[[Review, Runtime], Awaitable[Decision]]


def kubevirt_gates(gate: SidecarGateCache) -> KubeVirtGates:
    """The gates besides Sidecar and the version, as last read with it (``gate.current()``)."""
    return KubeVirtGates(plugins=gate.plugins, root=gate.root, version=gate.kubevirt_version)


def _name(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return str(meta.get("name") or meta.get("generateName", "") + "*")


def _who(kind: str, review: Review) -> str:
    return f"{kind} {review.namespace}/{_name(review.obj)}"


def _mac_refusal(problems: list[str], who: str) -> Decision:
    # 422 (Invalid), the code virt-api gives a field it refuses: these MACs would be pinned, copied
    # to the migration target pod and handed to the CNI, and no NIC can carry them.
    return Decision.deny(f"{WARN_PREFIX}{who}: " + "; ".join(problems), code=422)


async def decide_vmi(review: Review, rt: Runtime) -> Decision:
    # A running VMI is never retrofitted, whoever sends the UPDATE: a MAC its guest does not have,
    # the allow annotation and a sidecar entry its pod does not run would make the next migration
    # strand it. An UPDATE only gets back a MAC we pinned that a re-apply dropped
    # (docs/kubevirt-facts.md K1, K2; the chart keeps KubeVirt's own writes away with matchConditions).
    if review.operation == "UPDATE":
        return restore_dropped_macs(review.obj, review.old_obj, config=rt.config)
    if review.operation != "CREATE":
        return Decision()
    problems = non_unicast_macs(review.obj, rt.config.keys)
    decision = (
        Decision()
        if problems
        else mutate_vmi(
            review.obj,
            namespace=review.namespace,
            config=rt.config,
            sidecar_gate_on=await rt.gate.current(),
            kubevirt=kubevirt_gates(rt.gate),
            fallback_name=review.uid,
        )
    )
    # A VMI made from a VM whose template we completed needs nothing; one we would change or
    # refuse is worth a read of its VM, which may have opted out on its own annotations.
    if (problems or decision.patch) and (owner := vm_owner(review.obj)) is not None:
        said = await _owner_opt_out(review, rt, owner)
        if isinstance(said, Decision):
            return said
        if said is not None:
            decision.warnings.append(said)
    if problems:
        return _mac_refusal(problems, _who("VMI", review))
    return decision


async def _owner_opt_out(review: Review, rt: Runtime, owner: VmOwner) -> Decision | str | None:
    """The opt-out of the VM a VMI was made from: KubeVirt copies the template's annotations to the
    VMI, never the VM's own (facts K12). A Decision admitting the VMI as written when that VM opted
    out; a warning when it could not be read (the VMI is then decided alone, as before); else None."""
    vm_name = f"VM {review.namespace}/{owner.name}"
    if rt.kube is None:
        return (
            f"{WARN_PREFIX}no Kubernetes API access configured, so whether {vm_name} opted out was not checked; "
            "the VMI is decided by its own annotations"
        )
    try:
        vm = await rt.kube.get_vm(review.namespace, owner.name)
    except KubeError as exc:
        return (
            f"{WARN_PREFIX}could not read {vm_name} to see whether it opted out ({exc}); "
            "the VMI is decided by its own annotations"
        )
    uid = (vm.get("metadata") or {}).get("uid")
    if owner.uid is not None and uid is not None and uid != owner.uid:
        return None  # a VM of that name, but not the one that made this VMI
    if not opted_out(vm, rt.config.keys):
        return None
    note = opt_out_note(rt.config.keys.enabled)
    return Decision(warnings=[f"{WARN_PREFIX}{_who('VMI', review)} admitted as written: its {vm_name} is {note}"])


async def decide_vm(review: Review, rt: Runtime) -> Decision:
    # CREATE, and UPDATE too: a re-apply drops the pinned MAC from the template (a JSON merge patch
    # replaces the interfaces list) and the same decision puts the same MAC back; a VM made before
    # the install is pinned at its next UPDATE and runs so at its next start (docs/install.md).
    if review.operation not in ("CREATE", "UPDATE"):
        return Decision()
    keys = rt.config.keys
    # An opted-out VM is left as it is, bad MACs and all: its VMIs are admitted as written too.
    opting_out = opted_out(review.obj, keys)
    if not opting_out and (problems := non_unicast_macs(vm_template_as_vmi(review.obj), keys)):
        who = _who("VM", review)
        had = non_unicast_macs(vm_template_as_vmi(review.old_obj), keys) if review.old_obj else []
        if new := [p for p in problems if p not in had]:
            return _mac_refusal(new, who)
        # Already so before this UPDATE (a VM made before the check): refusing would block every
        # edit, stopping the VM included; it is left as it is and the user told.
        return Decision(warnings=[f"{WARN_PREFIX}{who}: " + "; ".join(problems) + "; VM left unchanged"])
    decision = mutate_vm(
        review.obj,
        namespace=review.namespace,
        config=rt.config,
        sidecar_gate_on=await rt.gate.current(),
        kubevirt=kubevirt_gates(rt.gate),
        fallback_name=review.uid,
    )
    if review.operation == "UPDATE" and not decision.patch and not (opting_out and not opted_out(review.old_obj, keys)):
        decision.warnings = []  # said at CREATE (or when the VM opted out); not on every edit
    return decision


async def decide_pod(review: Review, rt: Runtime, *, fail_closed: bool = False) -> Decision:
    """``/mutate/pods``; with ``fail_closed``, ``/mutate/migration-target-pods`` (decide_target_pod)."""
    if review.operation != "CREATE":
        return Decision()
    metadata = review.obj["metadata"]
    ann = metadata.get("annotations") or {}
    vmi_macs: dict[str, str] | None = None
    pod_ifaces: list[str] | None = None
    is_target = MIGRATION_JOB_UID_LABEL in (metadata.get("labels") or {})
    vmi_name = ann.get(DOMAIN_ANNOTATION)
    warnings: list[str] = []
    if (
        is_target
        and rt.kube is not None
        and vmi_name
        and (rt.config.cni_mac_annotation or rt.config.keys.macs not in ann)
    ):
        try:
            vmi = await rt.kube.get_vmi(review.namespace, vmi_name)
        except InvalidNameError as exc:
            # Nothing read: a pod is never refused over it (fail-open, as for a failed read).
            warnings.append(f"{WARN_PREFIX}annotation {DOMAIN_ANNOTATION}: {exc}; VMI not read")
        except KubeError as exc:
            warnings.append(f"{WARN_PREFIX}could not read VMI {vmi_name}: {exc}")
        else:
            managed = vmi_managed_interfaces(vmi, rt.config.keys)
            pod_ifaces = [i["name"] for i in managed if i["network"] == "pod"]
            vmi_macs = {}
            for iface in managed:
                if not iface["mac"]:
                    continue
                try:
                    vmi_macs[iface["name"]] = unicast_mac(iface["mac"])
                except ValueError as exc:
                    # A VMI admitted before the check: its MAC is not handed to the CNI.
                    warnings.append(f"{WARN_PREFIX}VMI {vmi_name}: interface {iface['name']!r}: {exc}; not used")
    await rt.gate.current()  # refreshes the observed KubeVirt version with the gate when stale
    decision = mutate_launcher_pod(
        review.obj,
        config=rt.config,
        vmi_macs=vmi_macs,
        pod_network_interfaces=pod_ifaces,
        kubevirt_version=rt.gate.kubevirt_version,
        namespace=review.namespace,
        fail_closed=fail_closed,
    )
    decision.warnings[:0] = warnings
    return decision


# The fail-closed route's refusal when the server itself cannot decide (its deadline, a bug).
TARGET_POD_REFUSED = f"migration target pod refused, as its fixer could not be set up: {TARGET_POD_WAITS}"


async def decide_target_pod(review: Review, rt: Runtime) -> Decision:
    """Migration target pods whose fixer the pod patch completes (the chart's failurePolicy Fail
    entry): decided as any launcher pod, but one that would get no working fixer is refused, where
    ``/mutate/pods`` admits it as it is. The route's stance refuses too (``TARGET_POD_REFUSED``)."""
    return await decide_pod(review, rt, fail_closed=True)


async def decide_migration(review: Review, rt: Runtime) -> Decision:
    if review.operation != "CREATE":
        return Decision()
    if (started_by := kubevirt_initiated(review.obj)) is not None:
        # Decided from the object alone, before any read: an API error or a read running into the
        # deadline would otherwise refuse it in strict mode and hold a drain forever (the chart's
        # matchConditions keep virt-controller's own requests away from us in the first place).
        log.info("migration %s/%s admitted unread: %s", review.namespace, _name(review.obj), started_by)
        return Decision()
    vmi_name = (review.obj.get("spec") or {}).get("vmiName")
    if not isinstance(vmi_name, str) or not vmi_name:
        return Decision.deny("spec.vmiName is missing", code=400)
    if rt.kube is None:
        problem = "no Kubernetes API access configured (--kubeconfig or in-cluster), cannot check the VMI"
    else:
        try:
            vmi = await rt.kube.get_vmi(review.namespace, vmi_name)
        except InvalidNameError as exc:
            # No VMI can have such a name (and none is read): refused in either mode, as a missing
            # vmiName or a VMI that is not there is.
            return Decision.deny(f"{WARN_PREFIX}spec.vmiName: {exc}", code=400)
        except NotFoundError:
            return Decision.deny(f"VirtualMachineInstance {review.namespace}/{vmi_name} not found", code=404)
        except KubeError as exc:
            problem = f"could not read VMI {review.namespace}/{vmi_name}: {exc}"
        else:
            await rt.gate.current()  # the gates an inject or node record's fixer needs
            return validate_migration(
                review.obj, vmi, namespace=review.namespace, config=rt.config, kubevirt=kubevirt_gates(rt.gate)
            )
    # The API read failed: strict mode refuses what it cannot check, warn mode lets it through.
    if rt.config.validation == "strict":
        return Decision.deny(f"{WARN_PREFIX}{problem}", code=503)
    return Decision(warnings=[f"{WARN_PREFIX}{problem}; migration not checked"])


async def decide_in_stance(
    decide: Decider, review: Review, rt: Runtime, *, endpoint: str, fail_open: bool, refused: str | None = None
) -> tuple[Decision, bool]:
    """The decision, within the deadline; on a timeout or a bug, the endpoint's own stance: the
    mutators (and warn-mode validation) admit unchanged; strict validation and the migration
    target pods' route refuse, saying ``refused`` (what the refusal means). Never a 500 the
    apiserver would turn into a failed create. Second item: whether it was a bug."""
    try:
        async with asyncio.timeout(rt.config.request_deadline_s):
            return await decide(review, rt), False
    except TimeoutError:
        msg = f"{WARN_PREFIX}no answer within {rt.config.request_deadline_s}s"
        if fail_open:
            return Decision(warnings=[msg]), False
        return Decision.deny(f"{msg}; {refused}" if refused else msg, code=504), False
    except Exception:
        log.exception("%s: unexpected error on %s", endpoint, review.uid)
        msg = f"{WARN_PREFIX}internal error"
        if fail_open:
            return Decision(warnings=[f"{msg}, object admitted unchanged"]), True
        return Decision.deny(f"{msg}; {refused or 'refused'}", code=500), True
