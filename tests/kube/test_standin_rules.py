"""The fakes' own rules, without a control plane: kubelab's fake virt-api MAC check (Go's
``net.ParseMAC`` plus KubeVirt's 6-byte limit) and its spec rule, and the fake virt-controller's
sidecar resources. Not KubeVirt: stand-ins checked against kubevirt/kubevirt (docs/kubevirt-facts.md)."""

from __future__ import annotations

import pytest

from kubelab.fake_virt_api import (
    SIDECAR_GATE_MESSAGE,
    SPEC_UPDATE_MESSAGE,
    admit_create,
    admit_update,
    kubevirt_service_accounts,
    mac_error,
)
from kubelab.fake_virt_controller import render_launcher_pod, sidecar_resources, wants_guaranteed_qos


@pytest.mark.parametrize(
    "mac",
    ["02:00:00:00:00:01", "02-00-00-00-00-01", "0200.0000.0001", "AA:BB:CC:DD:EE:FF", ""],
)
def test_macs_go_accepts_pass(mac: str) -> None:
    assert mac_error(mac) is None


@pytest.mark.parametrize(
    "mac",
    ["02:00:00:00:00", "02:00:00:00:00:0g", "02:00-00:00:00:01", " 02:00:00:00:00:01", "0200000000:01", "2:0:0:0:0:1"],
)
def test_malformed_macs_are_refused_with_kubevirts_words(mac: str) -> None:
    assert mac_error(mac) == f"malformed MAC address ({mac})"


def test_an_eui64_parses_but_is_too_long() -> None:
    assert mac_error("02:00:00:00:00:00:00:01") == "too long MAC address (02:00:00:00:00:00:00:01)"


def test_create_causes_name_the_interface_and_the_gate() -> None:
    vmi = {
        "metadata": {"annotations": {"hooks.kubevirt.io/hookSidecars": "[]"}},
        "spec": {"domain": {"devices": {"interfaces": [{"name": "a"}, {"name": "b", "macAddress": "x"}]}}},
    }
    assert admit_create(vmi, sidecar_gate=lambda: False) == [
        "interface spec.domain.devices.interfaces[1].name has malformed MAC address (x).",
        SIDECAR_GATE_MESSAGE,
    ]
    assert admit_create(vmi, sidecar_gate=lambda: True) == [
        "interface spec.domain.devices.interfaces[1].name has malformed MAC address (x)."
    ]


def test_only_kubevirts_accounts_may_change_a_spec() -> None:
    old = {"metadata": {}, "spec": {"a": 1}}
    new = {"metadata": {"labels": {"x": "y"}}, "spec": {"a": 2}}
    accounts = kubevirt_service_accounts("kubevirt")
    assert admit_update(new, old, username="alice", kubevirt_accounts=accounts) == [SPEC_UPDATE_MESSAGE]
    assert (
        admit_update(new, old, username="system:serviceaccount:kubevirt:kubevirt-handler", kubevirt_accounts=accounts)
        == []
    )
    assert admit_update({**new, "spec": old["spec"]}, old, username="alice", kubevirt_accounts=accounts) == []
    # v1.6 added the synchronization controller; the operator was never one of them.
    assert "system:serviceaccount:kubevirt:kubevirt-synchronization-controller" in accounts
    assert "system:serviceaccount:kubevirt:kubevirt-synchronization-controller" not in kubevirt_service_accounts(
        "kubevirt", kubevirt_version="v1.5.0"
    )
    assert "system:serviceaccount:kubevirt:kubevirt-operator" not in accounts


def _vmi(resources: dict[str, object], cpu: dict[str, object] | None = None) -> dict[str, object]:
    domain: dict[str, object] = {"resources": resources}
    if cpu is not None:
        domain["cpu"] = cpu
    return {"metadata": {"name": "v", "namespace": "n", "uid": "u"}, "spec": {"domain": domain}}


def test_sidecar_resources_follow_kubevirts_guaranteed_rule() -> None:
    fixed = {"requests": {"cpu": "200m", "memory": "64M"}, "limits": {"cpu": "200m", "memory": "64M"}}
    guaranteed = _vmi({"requests": {"cpu": "1", "memory": "128Mi"}, "limits": {"cpu": "1000m", "memory": "134217728"}})
    assert sidecar_resources(guaranteed) == fixed
    assert sidecar_resources(_vmi({"requests": {"memory": "128Mi"}})) == {}
    assert sidecar_resources(_vmi({}, cpu={"dedicatedCpuPlacement": True})) == fixed
    # A memory limit without a request counts from v1.7 only.
    limit_only = _vmi({"requests": {"cpu": "1"}, "limits": {"cpu": "1", "memory": "1Gi"}})
    assert wants_guaranteed_qos(limit_only, kubevirt_version="v1.7.0")
    assert not wants_guaranteed_qos(limit_only, kubevirt_version="v1.6.0")


def test_sockets_layout_per_version() -> None:
    vmi = _vmi({})
    vmi["metadata"] = {
        "name": "v",
        "namespace": "n",
        "uid": "u",
        "annotations": {"hooks.kubevirt.io/hookSidecars": '[{"image": "i"}, {"image": "j"}]'},
    }
    new = render_launcher_pod(vmi, kubevirt_version="v1.9.0")
    old = render_launcher_pod(vmi, kubevirt_version="v1.5.0")
    assert [c["name"] for c in new["spec"]["containers"]] == ["compute", "hook-sidecar-0", "hook-sidecar-1"]
    assert [c["volumeMounts"] for c in new["spec"]["containers"][1:]] == [
        [{"name": "hook-sidecar-sockets", "mountPath": "/var/run/kubevirt-hooks", "subPath": f"hook-sidecar-{i}"}]
        for i in (0, 1)
    ]
    # v1.5 renders guest-console-log as a regular container, between compute and the sidecars.
    assert [c["name"] for c in old["spec"]["containers"]] == [
        "compute",
        "guest-console-log",
        "hook-sidecar-0",
        "hook-sidecar-1",
    ]
    assert [c["volumeMounts"] for c in old["spec"]["containers"][2:]] == [
        [{"name": "hook-sidecar-sockets", "mountPath": "/var/run/kubevirt-hooks"}]
    ] * 2
    for pod in (new, old):
        libvirt = [
            c["name"]
            for c in pod["spec"]["containers"]
            if any(m["name"] == "libvirt-runtime" for m in c["volumeMounts"])
        ]
        assert libvirt == ["compute"]
