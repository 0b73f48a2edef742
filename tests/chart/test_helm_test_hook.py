"""The chart's `helm test` hook: what it renders, and the check it runs (``webhook.helmtest``)
against the real webhook process over TLS. tests/kube/test_chart_install.py runs it against a real
API server with the RBAC the hook creates."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.chart.conftest import Render, by_kind, one
from tests.webhook.server import running_webhook
from webhook.certs import CertificateAuthority
from webhook.helmtest import build_parser, check_gates, check_webhook

TEST_TEMPLATE = "templates/tests/test-webhook.yaml"


def _hooks(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if (o["metadata"].get("annotations") or {}).get("helm.sh/hook") == "test"]


def _pod_args(objects: list[dict[str, Any]]) -> list[str]:
    (container,) = one(_hooks(objects), "Pod")["spec"]["containers"]
    return container["args"]  # type: ignore[no-any-return]


def test_every_test_object_is_a_test_hook_and_nothing_else_is(render: Render) -> None:
    objects = render(tests=True)
    hooks = _hooks(objects)
    assert sorted(o["kind"] for o in hooks) == ["ClusterRole", "ClusterRoleBinding", "Pod", "ServiceAccount"]
    weights = {o["kind"]: int(o["metadata"]["annotations"]["helm.sh/hook-weight"]) for o in hooks}
    # helm creates hooks by weight: the pod comes after the RBAC it runs with.
    assert weights["Pod"] > max(w for k, w in weights.items() if k != "Pod")
    # Only the test's own objects are hooks: the release itself is installed as usual.
    assert all(o in hooks for o in objects if "-test" in o["metadata"]["name"])
    assert [o for o in objects if o not in hooks and (o["metadata"].get("annotations") or {}).get("helm.sh/hook")] == []
    # The RBAC goes when the test ends, passed or failed; the pod stays for `helm test --logs`.
    for obj in hooks:
        policy = set(obj["metadata"]["annotations"]["helm.sh/hook-delete-policy"].split(","))
        if obj["kind"] == "Pod":
            assert policy == {"before-hook-creation"}
        else:
            assert policy == {"before-hook-creation", "hook-succeeded", "hook-failed"}


def test_the_test_pod_may_only_list_kubevirt_crs(render: Render) -> None:
    hooks = _hooks(render(tests=True))
    (role,) = by_kind(hooks, "ClusterRole")
    assert role["rules"] == [{"apiGroups": ["kubevirt.io"], "resources": ["kubevirts"], "verbs": ["list"]}]
    (binding,) = by_kind(hooks, "ClusterRoleBinding")
    (sa,) = by_kind(hooks, "ServiceAccount")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "bridge-migration"}
    ]
    assert one(hooks, "Pod")["spec"]["serviceAccountName"] == sa["metadata"]["name"]


def test_the_test_pod_calls_the_service_by_the_certificates_name_and_mounts_only_the_ca(render: Render) -> None:
    objects = render(tests=True)
    pod = one(_hooks(objects), "Pod")
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["python", "-m", "webhook.helmtest"]
    assert container["image"] == one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    args = build_parser().parse_args(container["args"])  # exits (SystemExit) on an unknown flag
    host = args.url.removeprefix("https://").split(":")[0]
    assert args.url == f"https://{host}:443"
    service = one(objects, "Service")
    assert host == f"{service['metadata']['name']}.bridge-migration.svc"
    secret = one(objects, "Secret")
    leaf = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    assert host in leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    (volume,) = pod["spec"]["volumes"]
    assert volume["secret"] == {
        "secretName": secret["metadata"]["name"],
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }
    (mount,) = container["volumeMounts"]
    assert str(args.ca) == f"{mount['mountPath']}/ca.crt"
    # The Service selects webhook pods only, never the test pod.
    selector = service["spec"]["selector"]
    assert not selector.items() <= pod["metadata"]["labels"].items()
    assert pod["spec"]["restartPolicy"] == "Never"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize(
    ("values", "delivery"),
    [
        ({}, "auto"),
        ({"delivery": "hook"}, "hook"),
        ({"node": {"enabled": True}}, "node"),
        ({"delivery": "inject"}, "inject"),
    ],
)
def test_the_test_pod_checks_the_delivery_the_webhook_runs_with(
    render: Render, values: dict[str, Any], delivery: str
) -> None:
    objects = render(values, tests=True)
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert f"--delivery={delivery}" in container["args"]
    assert f"--delivery={delivery}" in _pod_args(objects)


def _kubevirts(*gates: str, disabled: tuple[str, ...] = ()) -> dict[str, Any]:
    dev: dict[str, Any] = {"featureGates": list(gates)}
    if disabled:
        dev["disabledFeatureGates"] = list(disabled)
    return {
        "items": [
            {
                "metadata": {"name": "kubevirt", "namespace": "kubevirt"},
                "spec": {"configuration": {"developerConfiguration": dev}},
            }
        ]
    }


@pytest.mark.parametrize(
    ("delivery", "gate", "kubevirts", "ok", "says"),
    [
        ("hook", "auto", _kubevirts("Sidecar"), True, "delivery hook -> hook: needs the Sidecar feature gate: on"),
        ("hook", "auto", _kubevirts("LiveMigration"), False, "needs the Sidecar feature gate: OFF"),
        ("hook", "auto", _kubevirts("Sidecar", disabled=("Sidecar",)), False, "Sidecar feature gate: OFF"),
        ("node", "auto", _kubevirts("Plugins"), True, "delivery node -> node: needs the Plugins feature gate: on"),
        ("node", "auto", _kubevirts("Sidecar"), False, "needs the Plugins feature gate: OFF"),
        ("inject", "auto", _kubevirts(), True, "delivery inject -> inject: needs no feature gate"),
        ("auto", "auto", _kubevirts("Sidecar"), True, "delivery auto -> hook: needs the Sidecar feature gate: on"),
        ("auto", "auto", _kubevirts(), True, "delivery auto -> inject: needs no feature gate"),
        # Forced on while KubeVirt has it off: the webhook adds hook sidecars virt-api refuses.
        ("auto", "on", _kubevirts(), False, "sidecar.gate is forced on, but the KubeVirt CR has Sidecar off"),
        ("auto", "off", _kubevirts("Sidecar"), True, "delivery auto -> inject"),
        ("inject", "auto", {"items": []}, False, "no KubeVirt CR in the cluster"),
    ],
)
def test_the_gate_check_says_what_the_delivery_needs(
    delivery: Any, gate: str, kubevirts: dict[str, Any], ok: bool, says: str
) -> None:
    passed, lines = check_gates(delivery, gate, kubevirts)
    assert passed is ok
    assert any(says in line for line in lines), lines


def test_the_tls_check_passes_with_the_webhooks_ca_and_fails_with_another(tmp_path: Path) -> None:
    with running_webhook(tmp_path, "--delivery", "inject") as hook:
        ok, lines = check_webhook(hook.url, hook.files.ca, server_name=None, timeout_s=10)
        assert ok, lines
        assert lines[0] == f"webhook: {hook.url}/healthz over TLS (CA {hook.files.ca}): HTTP 200"
        assert "delivery now inject" in lines[1]
        # The name the certificate is for, reached at another address: what the pod does through the Service.
        ip_url = hook.url.replace("localhost", "127.0.0.1")
        assert check_webhook(ip_url, hook.files.ca, server_name="localhost", timeout_s=10)[0]
        # A name the certificate does not carry, and a CA that did not sign it, both fail.
        wrong_name, why = check_webhook(ip_url, hook.files.ca, server_name="other.example", timeout_s=10)
        assert not wrong_name and "certificate" in why[0].lower()
        other = CertificateAuthority(tmp_path / "other")
        wrong_ca, why = check_webhook(hook.url, other.ca_path, server_name=None, timeout_s=10)
        assert not wrong_ca and "CERTIFICATE_VERIFY_FAILED" in why[0]


def test_the_check_exits_non_zero_and_says_fail_when_the_api_cannot_be_read(tmp_path: Path) -> None:
    with running_webhook(tmp_path) as hook:
        result = subprocess.run(
            [sys.executable, "-m", "webhook.helmtest", f"--url={hook.url}", f"--ca={hook.files.ca}", "--delivery=auto"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            env={"PATH": "/usr/bin:/bin"},  # no KUBERNETES_SERVICE_HOST: not in a cluster
        )
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout.splitlines()
    assert out[0].endswith("HTTP 200") and "kubevirt: cannot list KubeVirt CRs" in out[-2] and out[-1] == "FAIL"
