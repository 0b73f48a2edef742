"""A running VMI is never retrofitted, and KubeVirt's own status writes never wait on us.

KubeVirt's VMI CRD has no status subresource (kubelab's does not either), so virt-handler writes
a VMI's status with an UPDATE of the whole object (docs/kubevirt-facts.md K1). Here a ServiceAccount
named like virt-handler's, with update rights on VMIs, writes the status of a VMI that was created
while KubeVirt's Sidecar gate was off (stored without our changes) and of one we mutated. Neither
changes apart from its status, and the webhook is never called for the writes.
"""

from __future__ import annotations

import json
import re
import ssl
import urllib.request
from pathlib import Path

import pytest

from bridge_migration_contract import ALLOW_POD_BRIDGE_MIGRATION, HOOK_SIDECARS
from kubelab.kubectl import Kubectl
from kubelab.lab import AdmissionLab
from tests.kube.conftest import gate_off_hook_only, user_annotations, vmi_manifest

pytestmark = pytest.mark.kube

HANDLER_NS = "kubevirt"
HANDLER_SA = "kubevirt-handler"


def vmi_requests(lab: AdmissionLab) -> float:
    """The webhook's own count of VMI admission requests, all verdicts."""
    assert lab.webhook is not None
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # loopback, our own test webhook: only the count matters here
    with urllib.request.urlopen(f"{lab.webhook.url}/metrics", timeout=10, context=ctx) as resp:
        text = resp.read().decode()
    pattern = re.compile(r"^bridge_migration_webhook_requests_total\{([^}]*)\} (\S+)$", re.M)
    return sum(float(v) for labels, v in pattern.findall(text) if 'endpoint="mutate/virtualmachineinstances"' in labels)


def handler_kubectl(lab: AdmissionLab, kubectl: Kubectl, tmp_path: Path) -> Kubectl:
    """kubectl as virt-handler's ServiceAccount, allowed what virt-handler is on VMIs."""
    kubectl.apply(
        [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": HANDLER_NS}},
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": HANDLER_SA, "namespace": HANDLER_NS}},
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": "test-virt-handler"},
                "rules": [
                    {
                        "apiGroups": ["kubevirt.io"],
                        "resources": ["virtualmachineinstances"],
                        "verbs": ["get", "list", "create", "update", "patch"],
                    }
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "test-virt-handler"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "test-virt-handler",
                },
                "subjects": [{"kind": "ServiceAccount", "name": HANDLER_SA, "namespace": HANDLER_NS}],
            },
        ]
    )
    token = kubectl.run("create", "token", HANDLER_SA, f"--namespace={HANDLER_NS}").stdout.strip()
    config = lab.plane.token_kubeconfig(tmp_path / "handler.kubeconfig", token=token)
    return Kubectl(binary=kubectl.binary, kubeconfig=config)


def write_status(handler: Kubectl, vmi: dict[str, object], mac: str) -> None:
    """What virt-handler does: the whole VMI back, with a new status (an UPDATE, no /status)."""
    vmi["status"] = {"phase": "Running", "interfaces": [{"name": "default", "mac": mac, "infoSource": "domain"}]}
    handler.run("replace", "-f", "-", stdin=json.dumps(vmi))


def test_status_writes_by_virt_handler_change_nothing_and_never_reach_the_webhook(
    lab: AdmissionLab, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    with gate_off_hook_only(lab):
        kubectl.apply(vmi_manifest("before-install", namespace))
    kubectl.apply(vmi_manifest("ours", namespace))
    untouched = kubectl.get("vmi", "before-install", namespace=namespace)
    mutated = kubectl.get("vmi", "ours", namespace=namespace)
    assert user_annotations(untouched) == {}
    assert HOOK_SIDECARS in user_annotations(mutated)

    handler = handler_kubectl(lab, kubectl, tmp_path)
    calls_before = vmi_requests(lab)
    write_status(handler, untouched, "0a:58:0a:f4:00:07")
    write_status(handler, mutated, mutated["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"])  # type: ignore[index]
    assert vmi_requests(lab) == calls_before, "a status write was sent to the webhook"

    after = kubectl.get("vmi", "before-install", namespace=namespace)
    assert after["status"]["phase"] == "Running"  # the write went through
    assert after["spec"] == untouched["spec"]  # no pinned MAC its guest does not have
    assert user_annotations(after) == {}  # no allow annotation, no sidecar entry
    assert ALLOW_POD_BRIDGE_MIGRATION not in user_annotations(after)
    ours = kubectl.get("vmi", "ours", namespace=namespace)
    assert ours["spec"] == mutated["spec"]
    assert user_annotations(ours) == user_annotations(mutated)


def test_a_vmi_that_virt_controller_creates_is_still_mutated(
    lab: AdmissionLab, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    """Only KubeVirt's UPDATEs skip the webhook: virt-controller creates the VMI of every VM, and a
    VM made before the install gets its sidecar that way at its next start."""
    as_kubevirt = handler_kubectl(lab, kubectl, tmp_path)  # a kubevirt-* service account
    as_kubevirt.run("create", "-f", "-", stdin=json.dumps(vmi_manifest("from-a-vm", namespace)))
    ann = user_annotations(kubectl.get("vmi", "from-a-vm", namespace=namespace))
    assert ALLOW_POD_BRIDGE_MIGRATION in ann
    assert HOOK_SIDECARS in ann


def test_readyz_says_the_api_is_reachable_and_the_gate_is_on(lab: AdmissionLab) -> None:
    assert lab.webhook is not None
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # loopback, our own test webhook
    with urllib.request.urlopen(f"{lab.webhook.url}/readyz", timeout=10, context=ctx) as resp:
        ready = json.loads(resp.read())
    assert ready["ready"] is True
    assert (ready["api"], ready["sidecarGate"], ready["sidecarGateSource"]) == ("reachable", True, "auto")
