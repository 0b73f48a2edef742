"""Node mode's chart objects against a real API server with KubeVirt v1.9's Plugin CRD.

The CRD carries the schema controller-gen generates from kubevirt.io/api's plugin/v1alpha1 types
(scripts/build-crds.sh), with KubeVirt's cluster scope (facts P1): kube-apiserver prunes and
validates our Plugin as a v1.9 cluster would. KubeVirt's Plugin admission policies (installed with
the Plugins gate) are not here.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from kubelab.chart import CHART_DIR, helm_template
from kubelab.controlplane import ControlPlane
from kubelab.crds import plugin_crd
from kubelab.kubectl import Kubectl, to_yaml
from kubelab.tools import find_tools

pytestmark = pytest.mark.kube

NAMESPACE = "bridge-migration"


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    with ControlPlane(tools=find_tools()) as running:
        kubectl = running.kubectl()
        kubectl.apply([plugin_crd()], extra=["--server-side"])
        kubectl.run("wait", "--for=condition=Established", "--timeout=120s", "crd/plugins.plugin.kubevirt.io")
        yield running


def _rendered(plane: ControlPlane, kind: str, namespace: str = NAMESPACE) -> dict[str, Any]:
    values = {"node": {"enabled": True}}
    only = ["templates/node-agent.yaml"]
    objects = helm_template(plane.tools.helm, namespace=namespace, values=values, show_only=only)
    (obj,) = [o for o in objects if o["kind"] == kind]
    return obj


def test_helm_install_with_node_mode_stores_the_plugin_unpruned_and_cluster_scoped(plane: ControlPlane) -> None:
    argv = [
        str(plane.tools.helm), f"--kubeconfig={plane.kubeconfig}", "install", "bm", str(CHART_DIR),
        "-n", NAMESPACE, "--create-namespace", "--set", "node.enabled=true", "--wait=false",
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    kubectl = plane.kubectl()
    stored = kubectl.get("plugin", "bridge-migration")
    assert "namespace" not in stored["metadata"]
    # Nothing we wrote was pruned by KubeVirt's schema: every field is one the API knows.
    assert stored["spec"] == _rendered(plane, "Plugin")["spec"]
    ds = kubectl.get("daemonset", "bm-bridge-migration-node-agent", namespace=NAMESPACE)
    assert ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] == ["DAC_OVERRIDE"]


def test_a_plugin_field_kubevirt_does_not_know_is_refused(plane: ControlPlane) -> None:
    plugin = copy.deepcopy(_rendered(plane, "Plugin"))
    plugin["metadata"]["name"] = "bm-typo"
    plugin["spec"]["nodeHooks"][0]["failurestrategy"] = "Ignore"  # wrong case: not KubeVirt's field
    result = plane.kubectl().run(
        "create", "--dry-run=server", "--validate=strict", "-f", "-", stdin=to_yaml(plugin), check=False
    )
    assert result.returncode != 0
    assert "failurestrategy" in result.stderr


def _namespace_at(kubectl: Kubectl, name: str, level: str) -> None:
    kubectl.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": {"pod-security.kubernetes.io/enforce": level}},
            }
        ]
    )


def _pod_of(ds: dict[str, Any], namespace: str) -> dict[str, Any]:
    template = ds["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "node-agent-check", "namespace": namespace, "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }


def test_the_agent_needs_a_privileged_pod_security_namespace_because_of_its_host_paths(plane: ControlPlane) -> None:
    kubectl = plane.kubectl()
    _namespace_at(kubectl, "psa-baseline", "baseline")
    _namespace_at(kubectl, "psa-privileged", "privileged")
    refused = kubectl.run(
        "create", "--dry-run=server", "-f", "-",
        stdin=to_yaml(_pod_of(_rendered(plane, "DaemonSet", "psa-baseline"), "psa-baseline")), check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    # Only the host paths: DAC_OVERRIDE is among baseline's allowed capabilities.
    assert "hostPath volumes" in refused.stderr, refused.stderr
    assert "capabilities" not in refused.stderr, refused.stderr
    admitted = kubectl.run(
        "create", "--dry-run=server", "-f", "-",
        stdin=to_yaml(_pod_of(_rendered(plane, "DaemonSet", "psa-privileged"), "psa-privileged")), check=False,
    )  # fmt: skip
    assert admitted.returncode == 0, admitted.stderr


def test_without_kubevirts_plugin_api_helm_install_with_node_mode_fails_and_creates_nothing() -> None:
    # A cluster with KubeVirt < v1.9: no Plugin CRD.
    with ControlPlane(tools=find_tools()) as bare:
        argv = [
            str(bare.tools.helm), f"--kubeconfig={bare.kubeconfig}", "install", "bm", str(CHART_DIR),
            "-n", NAMESPACE, "--create-namespace", "--set", "node.enabled=true",
        ]  # fmt: skip
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
        assert result.returncode != 0
        assert 'no matches for kind "Plugin"' in result.stderr, result.stderr
        listed = bare.kubectl().run("get", "deployments,daemonsets", "-n", NAMESPACE, "-o", "name", check=False)
        assert listed.stdout.strip() == ""
