"""The VirtualMachineInstance object the lab hands to the sidecar, as virt-launcher would.

Only what the sidecar reads: metadata (name, namespace, annotations) and the interfaces and
networks of the spec. The pod network uses ``bridge`` binding; the lab's second network is a
Multus network with ``macvtap`` binding (its pod side is plumbed like the first one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lab.network import POD_NETWORK, NetworkDef


def lab_vmi(
    *,
    namespace: str,
    name: str,
    networks: Sequence[NetworkDef],
    annotations: Mapping[str, str],
    macs: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``macs``: interface name -> ``macAddress`` in the spec (what the webhook pins)."""
    interfaces: list[dict[str, Any]] = []
    nets: list[dict[str, Any]] = []
    for net in networks:
        iface: dict[str, Any] = {"name": net.name}
        if net == POD_NETWORK:
            iface["bridge"] = {}
            nets.append({"name": net.name, "pod": {}})
        else:
            iface["macvtap"] = {}
            nets.append({"name": net.name, "multus": {"networkName": f"lab-{net.name}"}})
        if macs and net.name in macs:
            iface["macAddress"] = macs[net.name]
        interfaces.append(iface)
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "namespace": namespace, "annotations": dict(annotations)},
        "spec": {"domain": {"devices": {"interfaces": interfaces}}, "networks": nets},
    }
