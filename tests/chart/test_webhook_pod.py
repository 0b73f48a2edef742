"""The webhook's pods as a cluster admin checks them: scheduled ahead of ordinary workloads, spread
over nodes and zones without ever refusing a small cluster, stopping without dropping a review in
flight, and reachable only on the webhook port (from the sources the admin names, when named)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from tests.chart.conftest import Render, one
from tests.chart.test_rendering import K8S_SCHEMA_VERSION

SELECTOR = {
    "app.kubernetes.io/name": "bridge-migration",
    "app.kubernetes.io/instance": "bridge-migration",
    "app.kubernetes.io/component": "webhook",
}


def _pod_spec(render: Render, values: dict[str, Any] | None = None) -> dict[str, Any]:
    return one(render(values or {}), "Deployment")["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def test_the_webhook_pods_are_system_cluster_critical_unless_overridden(render: Render) -> None:
    assert _pod_spec(render)["priorityClassName"] == "system-cluster-critical"
    assert _pod_spec(render, {"priorityClassName": "platform-high"})["priorityClassName"] == "platform-high"
    assert "priorityClassName" not in _pod_spec(render, {"priorityClassName": ""})


def test_replicas_spread_softly_over_nodes_and_zones(render: Render) -> None:
    spec = _pod_spec(render)
    constraints = {c["topologyKey"]: c for c in spec["topologySpreadConstraints"]}
    assert set(constraints) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    for constraint in constraints.values():
        # Soft: a one-node (or one-zone) cluster still runs every replica.
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
        assert constraint["maxSkew"] == 1
        assert constraint["labelSelector"] == {"matchLabels": SELECTOR}
        # Only the pods of one ReplicaSet count: a rollout is not skewed by the old pods.
        assert constraint["matchLabelKeys"] == ["pod-template-hash"]
    # The spread replaces the old default anti-affinity; an admin's affinity is still taken as given.
    assert "affinity" not in spec
    zone_only = [{"maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule"}]
    spec = _pod_spec(render, {"topologySpreadConstraints": zone_only, "affinity": {"nodeAffinity": {}}})
    assert spec["topologySpreadConstraints"] == [zone_only[0] | {
        "labelSelector": {"matchLabels": SELECTOR}, "matchLabelKeys": ["pod-template-hash"],
    }]  # fmt: skip
    assert spec["affinity"] == {"nodeAffinity": {}}
    assert "topologySpreadConstraints" not in _pod_spec(render, {"topologySpreadConstraints": []})


@pytest.mark.parametrize(("sleep", "timeout"), [(5, 5), (1, 30), (20, 10)])
def test_a_stopping_pod_pauses_then_has_time_to_finish_a_review_in_flight(
    render: Render, sleep: int, timeout: int
) -> None:
    spec = _pod_spec(render, {"webhook": {"preStopSleepSeconds": sleep, "timeoutSeconds": timeout}})
    (container,) = spec["containers"]
    assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": sleep}}}
    # After the pause comes SIGTERM; a review that arrived just before it may run timeoutSeconds.
    assert spec["terminationGracePeriodSeconds"] >= sleep + timeout + 1


def test_the_default_pause_and_no_pause(render: Render) -> None:
    (container,) = _pod_spec(render)["containers"]
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] == 5
    spec = _pod_spec(render, {"webhook": {"preStopSleepSeconds": 0}})
    assert "lifecycle" not in spec["containers"][0]
    assert spec["terminationGracePeriodSeconds"] >= 5 + 1


def test_the_network_policy_is_on_by_default_and_admits_only_the_webhook_port(render: Render) -> None:
    policy = one(render(), "NetworkPolicy")
    assert policy["spec"]["podSelector"] == {"matchLabels": SELECTOR}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    # No source named: the API server's address differs by cluster, so any source, the port only.
    assert policy["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8443}]}]


def test_named_api_server_cidrs_are_the_only_sources_besides_the_release_test_pod(render: Render) -> None:
    prometheus = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    values = {"networkPolicy": {"apiServerCIDRs": ["10.0.0.10/32", "fd00::/64"], "extraFrom": [prometheus]}}
    policy = one(render(values), "NetworkPolicy")
    kubernetes_validate.validate(policy, K8S_SCHEMA_VERSION, strict=True)
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8443}]
    assert rule["from"] == [
        {"ipBlock": {"cidr": "10.0.0.10/32"}},
        {"ipBlock": {"cidr": "fd00::/64"}},
        prometheus,
        # `helm test` calls the webhook from a pod of the release.
        {"podSelector": {"matchLabels": SELECTOR | {"app.kubernetes.io/component": "test"}}},
    ]


@pytest.mark.parametrize(
    "bad",
    [
        {"networkPolicy": {"apiServerCIDRs": ["10.0.0.10"]}},
        {"networkPolicy": {"apiServerCIDRs": ["api.example.org/32"]}},
        {"webhook": {"preStopSleepSeconds": -1}},
        {"topologySpreadConstraints": [{"topologyKey": "kubernetes.io/hostname"}]},
    ],
)
def test_bad_pod_and_policy_values_are_refused(render: Render, bad: dict[str, Any]) -> None:
    with pytest.raises(RuntimeError, match="values don't meet the specifications of the schema"):
        render(bad)
