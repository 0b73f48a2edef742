"""Bridge NICs on Multus networks through the real kube-apiserver: managed by default, and the
skip-multus-bridges annotation opts them out (issue 15)."""

from __future__ import annotations

from typing import Any

import pytest

from bridge_migration_contract import DEFAULT_KEYS, parse_macs
from kubelab.kubectl import Kubectl
from tests.kube.conftest import user_annotations, vmi_manifest

pytestmark = pytest.mark.kube


def _vlan_vmi(name: str, namespace: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    manifest = vmi_manifest(name, namespace, annotations=annotations)
    spec = manifest["spec"]
    spec["domain"]["devices"]["interfaces"].append({"name": "vlan7", "bridge": {}})
    spec["networks"].append({"name": "vlan7", "multus": {"networkName": "vlan7"}})
    return manifest


def _macs(stored: dict[str, Any]) -> dict[str, str | None]:
    return {i["name"]: i.get("macAddress") for i in stored["spec"]["domain"]["devices"]["interfaces"]}


def test_a_bridge_nic_on_a_multus_network_is_stored_with_a_pinned_mac_in_the_record(
    kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(_vlan_vmi("vlan-vm", namespace))
    stored = kubectl.get("vmi", "vlan-vm", namespace=namespace)
    macs = _macs(stored)
    assert macs["vlan7"] is not None and macs["vlan7"] != macs["default"]
    assert parse_macs(user_annotations(stored)[DEFAULT_KEYS.macs]) == macs


@pytest.mark.parametrize("skip", ["vlan7", "*"])
def test_the_opt_out_leaves_the_multus_bridge_as_written_and_still_manages_the_pod_network(
    kubectl: Kubectl, namespace: str, skip: str
) -> None:
    name = "vlan-skip" if skip == "vlan7" else "vlan-skip-all"
    kubectl.apply(_vlan_vmi(name, namespace, {DEFAULT_KEYS.skip_multus_bridges: skip}))
    stored = kubectl.get("vmi", name, namespace=namespace)
    macs = _macs(stored)
    assert macs["vlan7"] is None, "an opted-out NIC got a pinned MAC"
    assert macs["default"] is not None
    ann = user_annotations(stored)
    assert parse_macs(ann[DEFAULT_KEYS.macs]) == {"default": macs["default"]}
    assert ann[DEFAULT_KEYS.skip_multus_bridges] == skip
