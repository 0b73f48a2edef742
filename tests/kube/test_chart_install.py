"""The chart installed with helm into a real API server (its own control plane, since the installed
webhook configurations point at a Service that no test may call), and the Pod Security check."""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from kubelab.chart import CHART_DIR, helm_template
from kubelab.controlplane import ControlPlane
from kubelab.kubectl import Kubectl, to_yaml
from kubelab.tools import find_tools

pytestmark = pytest.mark.kube

RELEASE = "bm"
NAMESPACE = "bridge-migration"


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    with ControlPlane(tools=find_tools()) as running:
        yield running


def _helm(plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(plane.tools.helm), f"--kubeconfig={plane.kubeconfig}", *args]
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _ca_state(kubectl: Kubectl) -> tuple[str, list[str]]:
    secret = kubectl.get("secret", f"{RELEASE}-bridge-migration-tls", namespace=NAMESPACE)
    bundles: list[str] = []
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        config = kubectl.get(kind, f"{RELEASE}-bridge-migration")
        bundles += [hook["clientConfig"]["caBundle"] for hook in config["webhooks"]]
    return secret["data"]["ca.crt"], bundles


def test_helm_install_then_upgrade_keeps_the_generated_ca(plane: ControlPlane) -> None:
    kubectl = plane.kubectl()
    _helm(plane, "install", RELEASE, str(CHART_DIR), "--namespace", NAMESPACE, "--create-namespace")
    ca_before, bundles_before = _ca_state(kubectl)
    assert set(bundles_before) == {ca_before}
    _helm(plane, "upgrade", RELEASE, str(CHART_DIR), "--namespace", NAMESPACE, "--set", "macPolicy=keep")
    ca_after, bundles_after = _ca_state(kubectl)
    assert ca_after == ca_before, "helm upgrade re-rolled the CA"
    assert set(bundles_after) == {ca_before}
    deploy = kubectl.get("deployment", f"{RELEASE}-bridge-migration", namespace=NAMESPACE)
    assert "--mac-policy=keep" in deploy["spec"]["template"]["spec"]["containers"][0]["args"]


def test_install_with_bad_values_is_refused(plane: ControlPlane) -> None:
    argv = [
        str(plane.tools.helm),
        f"--kubeconfig={plane.kubeconfig}",
        "install",
        "bad",
        str(CHART_DIR),
        "--namespace",
        "bad-values",
        "--create-namespace",
        "--set",
        "macPolicy=sometimes",
    ]
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode != 0
    assert "macPolicy" in result.stderr


def _restricted_namespace(kubectl: Kubectl, name: str) -> None:
    kubectl.create_namespace(
        name,
        labels={
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
            "pod-security.kubernetes.io/warn": "restricted",
            "pod-security.kubernetes.io/warn-version": "latest",
        },
    )


def _pod_from(deployment: dict[str, Any], namespace: str) -> dict[str, Any]:
    template = copy.deepcopy(deployment["spec"]["template"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "webhook-pod", "namespace": namespace, "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }


def test_the_deployment_passes_pod_security_restricted(plane: ControlPlane) -> None:
    kubectl = plane.kubectl()
    _restricted_namespace(kubectl, "psa-restricted")
    (deployment,) = [
        o
        for o in helm_template(plane.tools.helm, namespace="psa-restricted", show_only=["templates/deployment.yaml"])
        if o["kind"] == "Deployment"
    ]
    created = kubectl.run("create", "--dry-run=server", "-f", "-", stdin=to_yaml(deployment))
    assert "would violate PodSecurity" not in created.stderr, created.stderr
    # Enforcement applies to pods: the Deployment's pod template as a pod is admitted ...
    pod = _pod_from(deployment, "psa-restricted")
    admitted = kubectl.run("create", "--dry-run=server", "-f", "-", stdin=to_yaml(pod), check=False)
    assert admitted.returncode == 0, admitted.stderr
    # ... and the check is live: the same pod without its container hardening is refused.
    weakened = copy.deepcopy(pod)
    del weakened["spec"]["containers"][0]["securityContext"]
    refused = kubectl.run("create", "--dry-run=server", "-f", "-", stdin=to_yaml(weakened), check=False)
    assert refused.returncode != 0
    assert "violates PodSecurity" in refused.stderr
