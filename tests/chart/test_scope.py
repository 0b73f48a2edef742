"""The chart's `scope`: cluster (every namespace not excluded or opted out, the default) or labelled
(only namespaces labelled `<prefix>enabled=true`, as Istio's injection label). The label scopes the
entries that decide what becomes ours (VMI and VM mutators, migration validator); the launcher-pod
entries follow the VMI instead (its records, copied onto its pods), so a VM admitted while its
namespace was labelled keeps a working fixer after the label goes. What the API server makes of it is
tests/kube/test_scope.py."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.conftest import Render, one

PREFIX = "bridge-migration.kubevirt.io/"
OPT_OUT = {"key": f"{PREFIX}enabled", "operator": "NotIn", "values": ["false"]}
OPT_IN = {"key": f"{PREFIX}enabled", "operator": "In", "values": ["true"]}
SCOPED = ("virtualmachineinstances", "virtualmachines", "virtualmachineinstancemigrations")
POD_ENTRIES = ("virt-launcher-pods", "migration-target-pods")
RECORDS_CONDITION = "a-vmi-with-our-records"


def _entries(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    hooks = one(objects, "MutatingWebhookConfiguration")["webhooks"]
    hooks += one(objects, "ValidatingWebhookConfiguration")["webhooks"]
    return {h["name"].split(".")[0]: h for h in hooks}


def _expressions(hook: dict[str, Any]) -> list[dict[str, Any]]:
    return hook["namespaceSelector"]["matchExpressions"]  # type: ignore[no-any-return]


def _excluded(hook: dict[str, Any]) -> list[str]:
    (names,) = [e for e in _expressions(hook) if e["key"] == "kubernetes.io/metadata.name"]
    assert names["operator"] == "NotIn"
    return names["values"]  # type: ignore[no-any-return]


def _condition_names(hook: dict[str, Any]) -> list[str]:
    return [c["name"] for c in hook.get("matchConditions", [])]


@pytest.mark.parametrize("values", [None, {"scope": "cluster"}])
def test_scope_cluster_is_the_default_and_every_entry_acts_wherever_not_opted_out(
    render: Render, values: dict[str, Any] | None
) -> None:
    entries = _entries(render(values, namespace="bm-system"))
    assert set(entries) == {*SCOPED, *POD_ENTRIES}
    for name, hook in entries.items():
        assert OPT_OUT in _expressions(hook), name
        assert OPT_IN not in _expressions(hook), name
        assert _excluded(hook) == ["kube-system", "bm-system"], name
        assert RECORDS_CONDITION not in _condition_names(hook), name


def test_scope_labelled_needs_the_opt_in_label_on_the_entries_that_decide_what_is_ours(render: Render) -> None:
    values = {"scope": "labelled", "webhook": {"excludeNamespaces": ["ci"]}}
    entries = _entries(render(values, namespace="bm-system"))
    for name in SCOPED:
        expressions = _expressions(entries[name])
        assert OPT_IN in expressions, name
        # The exclusions stay: never kube-system, never the webhook's own namespace.
        assert _excluded(entries[name]) == ["kube-system", "bm-system", "ci"], name
        assert RECORDS_CONDITION not in _condition_names(entries[name]), name


def test_scope_labelled_launcher_pods_follow_their_vmi_not_the_namespace_label(render: Render) -> None:
    cluster = _entries(render({}, namespace="bm-system"))
    labelled = _entries(render({"scope": "labelled"}, namespace="bm-system"))
    for name in POD_ENTRIES:
        # Same namespaces as under cluster: a target pod of a VMI we made migratable always gets its fixer.
        assert labelled[name]["namespaceSelector"] == cluster[name]["namespaceSelector"], name
        assert OPT_IN not in _expressions(labelled[name]), name
    # The target entry already takes only pods whose fixer the pod patch completes; unchanged.
    assert labelled["migration-target-pods"]["matchConditions"] == cluster["migration-target-pods"]["matchConditions"]
    # Every other launcher pod reaches the webhook only when it carries a record of ours.
    launcher = labelled["virt-launcher-pods"]
    assert _condition_names(launcher) == [*_condition_names(cluster["virt-launcher-pods"]), RECORDS_CONDITION]
    (records,) = [c for c in launcher["matchConditions"] if c["name"] == RECORDS_CONDITION]
    expression = records["expression"]
    assert f"k.startsWith('{PREFIX}')" in expression
    assert "ghcr\\.io/kubevirt-bridge-migration/bridge-migration-sidecar" in expression


def test_scope_labelled_follows_the_annotation_prefix(render: Render) -> None:
    prefix = "vmnet.example.com/"
    entries = _entries(render({"scope": "labelled", "annotationPrefix": prefix}))
    for name in SCOPED:
        assert {"key": f"{prefix}enabled", "operator": "In", "values": ["true"]} in _expressions(entries[name])
    (records,) = [c for c in entries["virt-launcher-pods"]["matchConditions"] if c["name"] == RECORDS_CONDITION]
    assert f"k.startsWith('{prefix}')" in records["expression"]


@pytest.mark.parametrize("scope", ["namespace", "Labelled", "labeled"])
def test_a_scope_the_chart_does_not_know_fails_at_install_time(render: Render, scope: str) -> None:
    with pytest.raises(RuntimeError, match="values don't meet the specifications of the schema"):
        render({"scope": scope})
