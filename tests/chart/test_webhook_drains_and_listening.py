"""The chart's part of issue 25 for the webhook: KubeVirt's own migrations never reach the migration
validator, the webhook listens dual-stack, and it is told when a node agent is deployed.

The real API server's evaluation of the condition is in tests/kube/test_migration_validation.py
(``test_with_the_webhook_down_in_strict_mode_virt_controllers_migrations_still_pass``).
"""

from __future__ import annotations

from typing import Any

from tests.chart.conftest import Render, one


def webhook_args(objects: list[dict[str, Any]]) -> list[str]:
    deployment = next(o for o in objects if o["kind"] == "Deployment" and "webhook" in str(o["spec"]))
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "webhook"]
    args: list[str] = container["args"]
    return args


def test_the_migration_validator_skips_only_virt_controllers_account_in_kubevirts_namespace(render: Render) -> None:
    for values, namespace in (({}, "kubevirt"), ({"kubevirtNamespace": "openshift-cnv"}, "openshift-cnv")):
        (hook,) = one(render(values), "ValidatingWebhookConfiguration")["webhooks"]
        (condition,) = hook["matchConditions"]
        assert condition["expression"] == (
            f"request.userInfo.username != 'system:serviceaccount:{namespace}:kubevirt-controller'"
        )


def test_the_webhook_listens_on_ipv6_any_which_takes_ipv4_too(render: Render) -> None:
    args = webhook_args(render())
    assert "--host=::" in args
    assert not any(a.startswith("--host=0.0.0.0") for a in args)


def test_the_webhook_is_told_about_the_node_agent_only_when_the_chart_deploys_one(render: Render) -> None:
    assert "--node-agent" not in webhook_args(render())
    assert "--node-agent" in webhook_args(render({"node": {"enabled": True}}))
