"""The chart renders what a KubeVirt admin expects, and refuses bad values at install time."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from kubelab.chart import CHART_DIR
from tests.chart.conftest import Render, by_kind, one

K8S_SCHEMA_VERSION = "1.37.0"
EVERYTHING_ON = {
    "networkPolicy": {"enabled": True},
    "metrics": {"serviceMonitor": {"enabled": True}},
    "cniMacAnnotation": "cni.projectcalico.org/hwAddr",
}


def _hooks(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    hooks: dict[str, dict[str, Any]] = {}
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        for hook in one(objects, kind)["webhooks"]:
            hooks[hook["name"].split(".")[0]] = hook
    return hooks


CONVENTIONS = {
    "fullnameOverride": "vmnet-fix",
    "commonLabels": {"team": "virt"},
    "image": {"registry": "registry.example.org", "repository": "bm/webhook", "digest": "sha256:" + "ab" * 32},
    "sidecar": {"image": {"pullPolicy": "Always"}},
    "node": {"enabled": True},
}


@pytest.mark.parametrize("values", [{}, EVERYTHING_ON, {"tls": {"certManager": {"enabled": True}}}, CONVENTIONS])
def test_helm_lint_strict_is_clean(helm: Path, tmp_path: Path, values: dict[str, Any]) -> None:
    import yaml

    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    result = subprocess.run(
        [str(helm), "lint", "--strict", str(CHART_DIR), "-f", str(values_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


@pytest.mark.parametrize("values", [{}, EVERYTHING_ON, {"replicaCount": 1}])
def test_every_built_in_object_validates_against_the_kubernetes_schema(render: Render, values: dict[str, Any]) -> None:
    objects = render(values, tests=True)  # the `helm test` hooks too
    checked = 0
    for obj in objects:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a prometheus-operator CRD: not in the Kubernetes schemas
        kubernetes_validate.validate(obj, K8S_SCHEMA_VERSION, strict=True)
        checked += 1
    assert checked >= 12


def test_webhooks_carry_the_admission_contract(render: Render) -> None:
    hooks = _hooks(render())
    assert set(hooks) == {
        "virtualmachineinstances",
        "virtualmachines",
        "virt-launcher-pods",
        "migration-target-pods",
        "virtualmachineinstancemigrations",
    }
    for hook in hooks.values():
        assert hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert 1 <= hook["timeoutSeconds"] <= 10
        mutators = ("virtualmachineinstances.", "virtualmachines.")
        expected = [["CREATE", "UPDATE"]] if hook["name"].startswith(mutators) else [["CREATE"]]
        assert [r["operations"] for r in hook["rules"]] == expected
        # Fail-open by default: a webhook that is down never blocks VMs or their pods; only a
        # migration whose target would lack its fixer waits (tests/chart/test_target_pods.py).
        assert hook["failurePolicy"] == ("Fail" if hook["name"].startswith("migration-target-pods.") else "Ignore")
        exprs = {e["key"]: e for e in hook["namespaceSelector"]["matchExpressions"]}
        assert exprs["kubernetes.io/metadata.name"]["operator"] == "NotIn"
        assert {"kube-system", "bridge-migration"} <= set(exprs["kubernetes.io/metadata.name"]["values"])
        assert exprs["bridge-migration.kubevirt.io/enabled"] == {
            "key": "bridge-migration.kubevirt.io/enabled",
            "operator": "NotIn",
            "values": ["false"],
        }
    vmi = hooks["virtualmachineinstances"]
    assert vmi["reinvocationPolicy"] == "IfNeeded"
    assert vmi["rules"][0]["resources"] == ["virtualmachineinstances"]
    assert vmi["clientConfig"]["service"]["path"] == "/mutate/virtualmachineinstances"
    pods = hooks["virt-launcher-pods"]
    assert pods["objectSelector"] == {"matchLabels": {"kubevirt.io": "virt-launcher"}}
    assert pods["clientConfig"]["service"]["path"] == "/mutate/pods"
    for name in ("virtualmachineinstances", "virtualmachines"):
        # KubeVirt's own UPDATEs (virt-handler's status writes) never wait on us; its CREATEs do come.
        [condition] = hooks[name]["matchConditions"]
        assert "request.operation != 'UPDATE'" in condition["expression"]
        assert ":kubevirt-[a-z-]+$" in condition["expression"]
    assert hooks["virtualmachines"]["clientConfig"]["service"]["path"] == "/mutate/virtualmachines"
    vmim = hooks["virtualmachineinstancemigrations"]
    assert vmim["clientConfig"]["service"]["path"] == "/validate/virtualmachineinstancemigrations"


def test_strict_validation_makes_the_migration_validator_fail_closed(render: Render) -> None:
    hooks = _hooks(render({"validation": "strict"}))
    assert hooks["virtualmachineinstancemigrations"]["failurePolicy"] == "Fail"
    assert hooks["virtualmachineinstances"]["failurePolicy"] == "Ignore"
    explicit = _hooks(render({"validation": "strict", "webhook": {"failurePolicy": {"migrations": "Ignore"}}}))
    assert explicit["virtualmachineinstancemigrations"]["failurePolicy"] == "Ignore"


def test_the_default_delivery_is_auto(render: Render) -> None:
    (container,) = one(render({}), "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "--delivery=auto" in container["args"]


def test_with_the_node_agent_installed_auto_delivers_by_node_and_an_explicit_choice_stays(render: Render) -> None:
    def args(values: dict[str, object]) -> list[str]:
        (container,) = [c for c in one(render(values), "Deployment")["spec"]["template"]["spec"]["containers"]]
        return container["args"]  # type: ignore[no-any-return]

    assert "--delivery=node" in args({"node": {"enabled": True}})
    assert "--delivery=inject" in args({"node": {"enabled": True}, "delivery": "inject"})


def test_deployment_is_hardened_and_passes_values_to_the_webhook(render: Render) -> None:
    objects = render(
        EVERYTHING_ON
        | {"macPolicy": "follow-pod", "validation": "strict", "sidecar": {"gate": "on"}, "delivery": "inject"}
    )
    deploy = one(objects, "Deployment")
    spec = deploy["spec"]["template"]["spec"]
    assert deploy["spec"]["replicas"] == 2
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {c["topologyKey"] for c in spec["topologySpreadConstraints"]} >= {"kubernetes.io/hostname"}
    (container,) = spec["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["command"] == ["python", "-m", "webhook"]
    args = container["args"]
    for expected in (
        "--mac-policy=follow-pod",
        "--validation=strict",
        "--sidecar-gate=on",
        "--delivery=inject",
        "--cni-mac-annotation=cni.projectcalico.org/hwAddr",
        "--annotation-prefix=bridge-migration.kubevirt.io/",
        "--tls-cert=/etc/bridge-migration/tls/tls.crt",
        "--tls-key=/etc/bridge-migration/tls/tls.key",
    ):
        assert expected in args
    assert any(a.startswith("--sidecar-image=ghcr.io/") for a in args)
    assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 1


@pytest.mark.parametrize("timeout", [1, 5, 30])
def test_the_request_deadline_is_below_the_apiservers_timeout_for_every_allowed_value(
    render: Render, timeout: int
) -> None:
    (container,) = one(render({"webhook": {"timeoutSeconds": timeout}}), "Deployment")["spec"]["template"]["spec"][
        "containers"
    ]
    flags = dict(a.removeprefix("--").split("=", 1) for a in container["args"] if "=" in a)
    deadline, api = float(flags["request-deadline"]), float(flags["api-timeout"])
    assert 0 < api < deadline < timeout


def test_cli_flags_in_the_deployment_are_ones_the_webhook_accepts(render: Render) -> None:
    from webhook.cli import build_parser

    (container,) = one(render(EVERYTHING_ON), "Deployment")["spec"]["template"]["spec"]["containers"]
    build_parser().parse_args(container["args"])  # exits (SystemExit) on an unknown flag or bad choice


def test_single_replica_has_no_disruption_budget(render: Render) -> None:
    assert by_kind(render({"replicaCount": 1}), "PodDisruptionBudget") == []


def test_rbac_only_reads_vmis_vms_and_kubevirts(render: Render) -> None:
    role = one(render(), "ClusterRole")
    granted = {
        (g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    }
    assert granted == {
        ("kubevirt.io", "virtualmachineinstances", "get"),
        # A VMI's own VM, for the VM's opt-out (tests/webhook/test_where_it_acts.py).
        ("kubevirt.io", "virtualmachines", "get"),
        ("kubevirt.io", "kubevirts", "get"),
        ("kubevirt.io", "kubevirts", "list"),
    }


def test_network_policy_admits_only_the_webhook_port(render: Render) -> None:
    policy = one(render({"networkPolicy": {"enabled": True}, "webhook": {"port": 9443}}), "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 9443}]}]
    assert by_kind(render({"networkPolicy": {"enabled": False}}), "NetworkPolicy") == []


def test_service_monitor_is_optional(render: Render) -> None:
    assert by_kind(render(), "ServiceMonitor") == []
    monitor = one(render({"metrics": {"serviceMonitor": {"enabled": True}}}), "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


@pytest.mark.parametrize(
    "bad",
    [
        {"macPolicy": "random"},
        {"validation": "lenient"},
        {"sidecar": {"gate": "maybe"}},
        {"delivery": "sidecar"},
        {"webhook": {"port": 80}},
        {"annotationPrefix": "no-slash"},
        {"replicaCount": 0},
        {"webhook": {"failurePolicy": {"virtualMachineInstances": "Sometimes"}}},
        {"cniMacAnnotation": "not a key"},
        {"typoKey": True},
    ],
)
def test_bad_values_fail_at_install_time(render: Render, bad: dict[str, Any]) -> None:
    with pytest.raises(RuntimeError, match="values don't meet the specifications of the schema"):
        render(bad)
