"""The commands of docs/troubleshooting.md that can run without a kubelet, run verbatim (only the namespace
`demo` swapped for the test's) against a VMI admitted through the webhook and its launcher pods as
virt-controller renders them (kubelab's fake virt-controller), each output checked for the shape the
doc promises. `kubectl logs` of the webhook runs here as its grep over the lab webhook's own log.
`kubectl exec`, the other `kubectl logs` and `virtctl` need a kubelet or a guest: they are listed, and
a command of any other kind in the doc fails the test until it is run here or listed."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge_migration_contract import parse_macs
from kubelab.fake_virt_controller import render_launcher_pod
from kubelab.kubectl import Kubectl
from kubelab.lab import CNI_MAC_ANNOTATION, OBSERVED_KUBEVIRT_VERSION, SIDECAR_IMAGE, AdmissionLab
from tests.kube.conftest import vmi_manifest

pytestmark = pytest.mark.kube

DOC = Path(__file__).resolve().parents[2] / "docs" / "troubleshooting.md"
VMI = "web-1"
SOURCE_POD = "virt-launcher-web-1-abcde"
TARGET_POD = "virt-launcher-web-1-x7k2p"
MIGRATION = {"name": "move-web-1", "uid": "6f1c2f9e-0000-4000-8000-000000000007"}
MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# Need a kubelet, a running guest or the node agent's pods: not here.
NOT_HERE = ("kubectl logs ", "kubectl exec ", "virtctl ")
WEBHOOK_LOGS = re.compile(
    r"^kubectl logs -n bridge-migration -l \S*app\.kubernetes\.io/component=webhook\S* --tail=-1 \| "
)

Check = Callable[[str, "Facts"], None]


class Facts:
    """What the outputs are checked against: the stored VMI and the namespace."""

    def __init__(self, kubectl: Kubectl, namespace: str) -> None:
        self.namespace = namespace
        self.vmi = kubectl.get("vmi", VMI, namespace=namespace)
        (iface,) = self.vmi["spec"]["domain"]["devices"]["interfaces"]
        self.mac: str = iface["macAddress"]


def doc_commands() -> list[str]:
    """Every line of the doc's `sh` blocks, and every inline code span that is a `kubectl get`."""
    text = DOC.read_text()
    commands = [
        line.strip()
        for block in re.findall(r"^```sh\n(.*?)^```", text, flags=re.S | re.M)
        for line in block.splitlines()
        if line.strip()
    ]
    commands += re.findall(r"`(kubectl get [^`]+)`", text)
    return commands


def _lines(out: str) -> list[str]:
    return out.rstrip("\n").split("\n")


def _allow(out: str, facts: Facts) -> None:
    assert out == "true\n"


def _vmi_macs(out: str, facts: Facts) -> None:
    assert parse_macs(out.strip()) == {"default": facts.mac}
    assert MAC.match(facts.mac)


def _spec_macs(out: str, facts: Facts) -> None:
    assert out == f"default {facts.mac}\n"


def _delivery(out: str, facts: Facts) -> None:
    assert out == "\n"  # the lab's webhook gives a hook sidecar: no delivery record


def _hook_sidecars(out: str, facts: Facts) -> None:
    (entry,) = json.loads(out)
    assert entry["image"] == SIDECAR_IMAGE
    assert entry["command"] == ["python", "-m", "sidecar", "serve"]


def _nic_refresh(out: str, facts: Facts) -> None:
    assert out == "auto\n"


def _pods(out: str, facts: Facts) -> None:
    # name phase node migrationJobUID: no kubelet here, so phase Pending and no node.
    rows = sorted(line.split(" ") for line in _lines(out))
    assert [(r[0], r[-1]) for r in rows] == [(SOURCE_POD, ""), (TARGET_POD, MIGRATION["uid"])]


def _container_names(out: str, facts: Facts) -> None:
    assert out == "compute hook-sidecar-0 compute hook-sidecar-0\n"


def _target_containers(out: str, facts: Facts) -> None:
    assert _lines(out) == ["compute quay.io/kubevirt/virt-launcher:v1.9.0", f"hook-sidecar-0 {SIDECAR_IMAGE}"]


def _node_agent_pods(out: str, facts: Facts) -> None:
    assert out == ""  # no node agent in the lab (and no node for the VMI): the command runs, lists none


def _pod_ip(out: str, facts: Facts) -> None:
    assert out == "\n"  # no kubelet here: the pod has no IP yet (a dotted quad in a cluster)


def _guest_interfaces(out: str, facts: Facts) -> None:
    assert out == ""  # no guest agent here: virt-handler reports none


def _cni_mac(out: str, facts: Facts) -> None:
    assert out == f"{facts.mac}\n"


def _pod_macs(out: str, facts: Facts) -> None:
    assert parse_macs(out.strip()) == {"default": facts.mac}


def _kubevirt_version(out: str, facts: Facts) -> None:
    assert out == f"{OBSERVED_KUBEVIRT_VERSION}\n"


def _vmi_decision(out: str, facts: Facts) -> None:
    (line,) = _lines(out)
    assert f"INFO webhook.decision_log: CREATE VirtualMachineInstance {facts.namespace}/{VMI}: patched " in line
    assert '"kubevirt.io/allow-pod-bridge-network-live-migration"' in line
    assert 'paths=["/spec/domain/devices/interfaces/0/macAddress"]' in line


def _pod_decisions(out: str, facts: Facts) -> None:
    lines = _lines(out)
    assert len(lines) == 2, out
    assert any(f"CREATE Pod {facts.namespace}/{TARGET_POD}: patched " in line for line in lines)
    assert all(f" vmi={VMI} " in line for line in lines)
    assert any(f'"{CNI_MAC_ANNOTATION}"' in line for line in lines)


# (a piece of the command that names it, its check); each must name exactly one command of the doc.
CHECKS: list[tuple[str, Check]] = [
    ("kubevirt\\.io/allow-pod-bridge-network-live-migration}", _allow),
    ("get vmi web-1 -n demo -o jsonpath='{.metadata.annotations.bridge-migration\\.kubevirt\\.io/macs}", _vmi_macs),
    ("{range .spec.domain.devices.interfaces[*]}", _spec_macs),
    ("bridge-migration\\.kubevirt\\.io/delivery}", _delivery),
    ("hooks\\.kubevirt\\.io/hookSidecars}", _hook_sidecars),
    ("bridge-migration\\.kubevirt\\.io/nic-refresh}", _nic_refresh),
    ("{range .items[*]}{.metadata.name} {.status.phase}", _pods),
    ("-o jsonpath='{.items[*].spec.containers[*].name}", _container_names),
    (f"get pod {TARGET_POD} -n demo -o jsonpath='{{range .spec.containers[*]}}", _target_containers),
    ("app.kubernetes.io/component=node-agent --field-selector", _node_agent_pods),
    ("{.status.podIP}", _pod_ip),
    ("{range .status.interfaces[*]}", _guest_interfaces),
    ("cni\\.projectcalico\\.org/hwAddr}", _cni_mac),
    (
        f"get pod {TARGET_POD} -n demo -o jsonpath='{{.metadata.annotations.bridge-migration\\.kubevirt\\.io/macs}}",
        _pod_macs,
    ),
    ("bridge-migration\\.kubevirt\\.io/kubevirt-version}", _kubevirt_version),
    ("grep 'VirtualMachineInstance demo/web-1:'", _vmi_decision),
    ("grep 'vmi=web-1 '", _pod_decisions),
]


def _check_of(command: str) -> Check | None:
    found = [check for piece, check in CHECKS if piece in command]
    assert len(found) <= 1, f"more than one check names {command}"
    return found[0] if found else None


def test_every_command_of_the_doc_runs_here_or_is_listed_as_needing_a_kubelet() -> None:
    commands = doc_commands()
    runnable = [c for c in commands if _check_of(c) is not None]
    assert len(runnable) == len(CHECKS), "a check names no command of the doc (or two)"
    for command in commands:
        if _check_of(command) is None:
            assert command.startswith(NOT_HERE), f"a command neither run here nor needing a kubelet: {command}"
    # The plugin's `analyze` is prose; the `sh` blocks keep to kubectl and virtctl.
    assert all(c.startswith(("kubectl ", "virtctl ")) for c in commands)


@pytest.fixture
def demo(lab: AdmissionLab, kubectl: Kubectl, namespace: str) -> Facts:
    """A bridge VMI admitted through the webhook, its first pod and a migration's target pod."""
    kubectl.apply(vmi_manifest(VMI, namespace))
    vmi = kubectl.get("vmi", VMI, namespace=namespace)
    kubectl.apply(render_launcher_pod(vmi, name=SOURCE_POD))
    kubectl.apply(render_launcher_pod(vmi, name=TARGET_POD, migration=MIGRATION))
    return Facts(kubectl, namespace)


def test_the_docs_commands_give_the_output_it_describes(lab: AdmissionLab, kubectl: Kubectl, demo: Facts) -> None:
    assert lab.webhook is not None
    env = {**os.environ, "PATH": f"{kubectl.binary.parent}:{os.environ['PATH']}", "KUBECONFIG": str(kubectl.kubeconfig)}
    ran = 0
    for command in doc_commands():
        check = _check_of(command)
        if check is None:
            continue
        here = re.sub(r"\bdemo\b", demo.namespace, command)
        # The webhook's pods are the lab's webhook process: its log file stands for `kubectl logs`.
        here = WEBHOOK_LOGS.sub(lambda _: f"cat {lab.webhook.log_path} | ", here)  # type: ignore[union-attr]
        assert not here.startswith("kubectl logs"), f"a kubectl logs the test cannot stand in for: {command}"
        result = subprocess.run(["bash", "-c", here], capture_output=True, text=True, env=env, timeout=60, check=False)
        assert result.returncode == 0, f"{here}\n{result.stderr}"
        try:
            check(result.stdout, demo)
        except AssertionError as exc:
            raise AssertionError(f"{command}\ngave {result.stdout!r}") from exc
        ran += 1
    assert ran == len(CHECKS)
