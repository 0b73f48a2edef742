"""The chart installed with helm into a real API server (its own control plane, since the installed
webhook configurations point at a Service that no test may call), and the Pod Security check."""

from __future__ import annotations

import base64
import copy
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubelab.chart import CHART_DIR, helm_template
from kubelab.controlplane import ControlPlane
from kubelab.crds import install_crds
from kubelab.kubectl import Kubectl, to_yaml
from kubelab.lab import KUBEVIRT_NAMESPACE, kubevirt_cr
from kubelab.ports import LOOPBACK, free_port, log_tail
from kubelab.tools import find_tools
from lab.process import stop, wait_for

pytestmark = pytest.mark.kube

RELEASE = "bm"
NAMESPACE = "bridge-migration"


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    with ControlPlane(tools=find_tools()) as running:
        # KubeVirt's CRDs and its install CR: what the `helm test` pod reads.
        kubectl = running.kubectl()
        install_crds(kubectl)
        kubectl.create_namespace(KUBEVIRT_NAMESPACE)
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


def test_the_api_server_admits_the_webhook_pod_as_critical_with_its_stop_pause_and_policy(plane: ControlPlane) -> None:
    """The Deployment's pod and the NetworkPolicy as the API server stores them (server-side dry run):
    the Priority admission plugin resolves system-cluster-critical, and the preStop sleep action
    (beta from 1.30, the chart's floor) is kept, not dropped."""
    kubectl = plane.kubectl()
    kubectl.create_namespace("pod-admission")
    rendered = helm_template(
        plane.tools.helm,
        namespace="pod-admission",
        show_only=["templates/deployment.yaml", "templates/networkpolicy.yaml"],
        values={"networkPolicy": {"apiServerCIDRs": ["172.16.0.10/32"]}},
    )
    (deployment,) = [o for o in rendered if o["kind"] == "Deployment"]
    (policy,) = [o for o in rendered if o["kind"] == "NetworkPolicy"]
    pod = _pod_from(deployment, "pod-admission")
    stored = json.loads(kubectl.run("create", "--dry-run=server", "-o", "json", "-f", "-", stdin=to_yaml(pod)).stdout)
    spec = stored["spec"]
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert spec["priority"] == 2_000_000_000  # the built-in class's value, filled in by admission
    (container,) = spec["containers"]
    assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert spec["terminationGracePeriodSeconds"] > 5 + 5
    assert {c["whenUnsatisfiable"] for c in spec["topologySpreadConstraints"]} == {"ScheduleAnyway"}
    stored_policy = json.loads(
        kubectl.run("create", "--dry-run=server", "-o", "json", "-f", "-", stdin=to_yaml(policy)).stdout
    )
    assert stored_policy["spec"]["ingress"][0]["from"][0] == {"ipBlock": {"cidr": "172.16.0.10/32"}}


def _test_hooks(plane: ControlPlane, release: str, namespace: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    """What `helm test` creates, in the order of its hook weights."""
    rendered = helm_template(plane.tools.helm, release=release, namespace=namespace, values=values)
    hooks = [o for o in rendered if (o["metadata"].get("annotations") or {}).get("helm.sh/hook") == "test"]
    return sorted(hooks, key=lambda o: int(o["metadata"]["annotations"]["helm.sh/hook-weight"]))


def _can(kubectl: Kubectl, user: str, verb: str, resource: str) -> bool:
    result = kubectl.run("auth", "can-i", verb, resource, f"--as={user}", "--all-namespaces", check=False)
    return result.stdout.strip() == "yes"


def test_the_helm_test_pod_checks_the_webhook_over_tls_and_the_gate_with_its_own_rbac(
    plane: ControlPlane, tmp_path: Path
) -> None:
    """The hook's objects as `helm test` creates them, and its check run as its ServiceAccount against
    the real API server, calling a webhook that serves the certificate the chart generated (there is
    no kubelet here to run the pod itself)."""
    kubectl = plane.kubectl()
    release, namespace, values = "hooks", "hook-test", {"delivery": "hook"}
    _helm(
        plane,
        "install",
        release,
        str(CHART_DIR),
        "--namespace",
        namespace,
        "--create-namespace",
        "--set",
        "delivery=hook",
    )
    hooks = _test_hooks(plane, release, namespace, values)
    pod = next(o for o in hooks if o["kind"] == "Pod")
    kubectl.apply([o for o in hooks if o["kind"] != "Pod"])
    # The pod passes Pod Security restricted, as the webhook's own pods do.
    _restricted_namespace(kubectl, "hook-test-psa")
    psa_pod = copy.deepcopy(pod) | {"metadata": {"name": "psa-check", "namespace": "hook-test-psa"}}
    admitted = kubectl.run("create", "--dry-run=server", "-f", "-", stdin=to_yaml(psa_pod), check=False)
    assert admitted.returncode == 0 and "violate" not in admitted.stderr, admitted.stderr

    sa = pod["spec"]["serviceAccountName"]
    user = f"system:serviceaccount:{namespace}:{sa}"
    assert _can(kubectl, user, "list", "kubevirts.kubevirt.io")
    for verb, resource in (("get", "secrets"), ("get", "kubevirts.kubevirt.io"), ("patch", "kubevirts.kubevirt.io")):
        assert not _can(kubectl, user, verb, resource), f"the test pod may {verb} {resource}"
    token = kubectl.run("create", "token", sa, f"--namespace={namespace}").stdout.strip()
    kubeconfig = plane.token_kubeconfig(tmp_path / "test-pod.kubeconfig", token=token)

    # The webhook with the release's own serving certificate; the check verifies it against the
    # release's ca.crt for the Service name in the pod's --url.
    secret = kubectl.get("secret", f"{release}-bridge-migration-tls", namespace=namespace)
    for key in ("tls.crt", "tls.key", "ca.crt"):
        (tmp_path / key).write_bytes(base64.b64decode(secret["data"][key]))
    port = free_port()
    log = tmp_path / "webhook.log"
    with log.open("w") as out:
        webhook = subprocess.Popen(
            [sys.executable, "-m", "webhook", f"--host={LOOPBACK}", f"--port={port}",
             f"--tls-cert={tmp_path / 'tls.crt'}", f"--tls-key={tmp_path / 'tls.key'}"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(
            lambda: _listening(port),
            timeout=30,
            interval=0.2,
            what=f"the webhook listening on port {port}",
            proc=webhook,
            log=lambda: log_tail(log),
        )
        (container,) = pod["spec"]["containers"]
        args = [a for a in container["args"] if not a.startswith(("--url=", "--ca="))]
        (url,) = [a.removeprefix("--url=") for a in container["args"] if a.startswith("--url=")]
        assert url == f"https://{release}-bridge-migration.{namespace}.svc:443"
        check = [
            sys.executable, "-m", "webhook.helmtest", *args, f"--url=https://{LOOPBACK}:{port}",
            f"--server-name={url.removeprefix('https://').split(':')[0]}", f"--ca={tmp_path / 'ca.crt'}",
            f"--kubeconfig={kubeconfig}",
        ]  # fmt: skip

        def run_check() -> subprocess.CompletedProcess[str]:
            return subprocess.run(check, capture_output=True, text=True, check=False, timeout=60)

        kubectl.apply(kubevirt_cr(sidecar_gate=True))
        passed = run_check()
        assert passed.returncode == 0, passed.stdout + passed.stderr
        assert "HTTP 200" in passed.stdout.splitlines()[0]
        assert "kubevirt: kubevirt/kubevirt; feature gates on: Sidecar" in passed.stdout
        assert "delivery hook -> hook: needs the Sidecar feature gate: on" in passed.stdout
        assert passed.stdout.splitlines()[-1] == "PASS"

        kubectl.apply(kubevirt_cr(sidecar_gate=False))
        failed = run_check()
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "needs the Sidecar feature gate: OFF" in failed.stdout
        assert failed.stdout.splitlines()[-1] == "FAIL"
    finally:
        stop(webhook, grace=10)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1):
            return True
    except OSError:
        return False
