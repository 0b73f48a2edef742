"""The VirtualMachineInstance object the lab hands to the sidecar, as virt-launcher would.

Only what the sidecar and the lab's reconcile stand-in (lab/reconcile.py) read: metadata (name,
namespace, annotations), the interfaces (with ``state`` when one is set) and networks of the spec,
and the interfaces of the status. The pod network, ``secondary`` and ``net1`` use ``bridge``
binding; the lab's macvtap network ``mvt`` the macvtap binding plugin (``binding: {name: macvtap}``,
facts V2), the only macvtap KubeVirt v1.5+ admits (V1).
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
    states: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``macs``: interface name -> ``macAddress`` in the spec (what the webhook pins);
    ``status_macs``: interface name -> ``mac`` in ``status.interfaces`` (what virt-handler reports
    from the domain; None: no domain yet, so no status); ``states``: interface name -> its
    ``state`` in the spec (``down``, ``absent``)."""
    interfaces: list[dict[str, Any]] = []
    nets: list[dict[str, Any]] = []
    for net in networks:
        iface: dict[str, Any] = {"name": net.name}
        if net.binding == "macvtap":
            iface["binding"] = {"name": "macvtap"}
        else:
            iface[net.binding] = {}
        if net.multus:
            nets.append({"name": net.name, "multus": {"networkName": f"lab-{net.name}"}})
        else:
            nets.append({"name": net.name, "pod": {}})
        if macs and net.name in macs:
            iface["macAddress"] = macs[net.name]
        if states and net.name in states:
            iface["state"] = states[net.name]
        interfaces.append(iface)
    vmi: dict[str, Any] = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "namespace": namespace, "annotations": dict(annotations)},
        "spec": {"domain": {"devices": {"interfaces": interfaces}}, "networks": nets},
    }
    if status_macs is not None:
        vmi["status"] = {"interfaces": status_interfaces(networks, status_macs)}
    return vmi


def status_interfaces(networks: Sequence[NetworkDef], status_macs: Mapping[str, str]) -> list[dict[str, Any]]:
    """``status.interfaces`` as KubeVirt fills it for a running VMI (docs/kubevirt-facts.md D5,
    R3): virt-handler reports each NIC of the domain with its MAC (infoSource ``domain``);
    virt-controller names the pod interface and, for a Multus network, adds ``multus-status``
    from the pod's network status, so a Multus NIC missing from the domain keeps an entry
    (infoSource ``multus-status`` alone), which is what makes KubeVirt's sync attach it again."""
    entries: list[dict[str, Any]] = []
    for net in networks:
        mac = status_macs.get(net.name)
        sources = (["domain"] if mac else []) + (["multus-status"] if net.multus else [])
        if not sources:
            continue
        entry: dict[str, Any] = {"name": net.name}
        if mac:
            entry["mac"] = mac
        entry["infoSource"] = ", ".join(sources)
        entry["podInterfaceName"] = net.pod_link
        entries.append(entry)
    return entries
