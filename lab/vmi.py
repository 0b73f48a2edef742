"""The VirtualMachineInstance object the lab hands to the sidecar, as virt-launcher would.

Only what the sidecar reads: metadata (name, namespace, annotations), the interfaces and
networks of the spec, and the interface MACs of the status. The pod network and ``net1`` use
``bridge`` binding; the lab's ``secondary`` network is a Multus network with ``macvtap`` binding
(its pod side is plumbed like a bridge binding's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lab.network import NetworkDef


def lab_vmi(
    *,
    namespace: str,
    name: str,
    networks: Sequence[NetworkDef],
    annotations: Mapping[str, str],
    macs: Mapping[str, str] | None = None,
    status_macs: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``macs``: interface name -> ``macAddress`` in the spec (what the webhook pins);
    ``status_macs``: interface name -> ``mac`` in ``status.interfaces`` (what virt-handler reports)."""
    interfaces: list[dict[str, Any]] = []
    nets: list[dict[str, Any]] = []
    for net in networks:
        iface: dict[str, Any] = {"name": net.name}
        iface[net.binding] = {}
        if net.multus:
            nets.append({"name": net.name, "multus": {"networkName": f"lab-{net.name}"}})
        else:
            nets.append({"name": net.name, "pod": {}})
        if macs and net.name in macs:
            iface["macAddress"] = macs[net.name]
        interfaces.append(iface)
    vmi: dict[str, Any] = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "namespace": namespace, "annotations": dict(annotations)},
        "spec": {"domain": {"devices": {"interfaces": interfaces}}, "networks": nets},
    }
    if status_macs:
        # virt-handler reports the MAC from the domain; virt-controller adds the pod interface
        # name from the pod's network status (docs/kubevirt-facts.md D5).
        links = {net.name: net.pod_link for net in networks}
        vmi["status"] = {
            "interfaces": [
                {"name": n, "mac": mac, "podInterfaceName": links[n]} for n, mac in status_macs.items() if n in links
            ]
        }
    return vmi
