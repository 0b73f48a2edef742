"""Only KubeVirt's own service accounts, in KubeVirt's namespace, skip the VMI and VM mutators on
UPDATE (docs/kubevirt-facts.md K3): a tenant can make a ``kubevirt-controller`` account in their
own namespace, and it must not count as KubeVirt.

The chart's ``matchConditions`` are CEL; the API server evaluates ``matches()`` with RE2. The
pattern used here (anchors, a literal, a character class, ``+``) means the same in Python's ``re``,
which is what checks it below.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.chart.conftest import Render, one

_MATCHES = re.compile(r"request\.userInfo\.username\.matches\('([^']*)'\)")


def kubevirt_patterns(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The username pattern of each mutator that exempts KubeVirt's UPDATEs, by webhook name."""
    patterns = {}
    for hook in one(objects, "MutatingWebhookConfiguration")["webhooks"]:
        for condition in hook.get("matchConditions") or []:
            # The pod entries' conditions are about the pod, not who sends it (test_target_pods.py).
            for pattern in _MATCHES.findall(condition["expression"]):
                patterns[hook["name"].split(".")[0]] = pattern
    return patterns


def skips(pattern: str, username: str) -> bool:
    return re.search(pattern, username) is not None


def test_a_tenants_own_kubevirt_named_account_is_not_treated_as_kubevirt(render: Render) -> None:
    patterns = kubevirt_patterns(render())
    assert set(patterns) == {"virtualmachineinstances", "virtualmachines"}
    for pattern in patterns.values():
        assert skips(pattern, "system:serviceaccount:kubevirt:kubevirt-handler")
        assert skips(pattern, "system:serviceaccount:kubevirt:kubevirt-controller")
        assert not skips(pattern, "system:serviceaccount:tenant:kubevirt-controller")
        assert not skips(pattern, "system:serviceaccount:tenant:kubevirt-handler")
        assert not skips(pattern, "system:serviceaccount:kubevirt-x:kubevirt-handler")
        assert not skips(pattern, "kubevirt-handler")


def test_kubevirts_namespace_is_a_value_for_distributions_that_install_it_elsewhere(render: Render) -> None:
    for pattern in kubevirt_patterns(render({"kubevirtNamespace": "openshift-cnv"})).values():
        assert skips(pattern, "system:serviceaccount:openshift-cnv:kubevirt-handler")
        assert not skips(pattern, "system:serviceaccount:kubevirt:kubevirt-handler")


@pytest.mark.parametrize("namespace", ["", "Kube-Virt", "a.b", "x:y", "a' || true || '"])
def test_a_namespace_that_cannot_be_one_is_refused_at_install(render: Render, namespace: str) -> None:
    with pytest.raises(RuntimeError, match="at '/kubevirtNamespace'"):
        render({"kubevirtNamespace": namespace})
