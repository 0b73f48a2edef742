"""The DHCP server of a lab pod: dnsmasq on each ``k6t-*`` bridge, one static lease each.

It stands in for virt-launcher's built-in DHCP server: per network, one static lease (pod
IP, gateway, a lease long enough that the guest never renews by itself) for the MAC this
pod expects the guest's NIC on that network to have.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from lab.network import PodNetwork
from lab.process import LabProcess
from lab.shell import in_netns


def start_dnsmasq(*, pod: PodNetwork, guest_macs: Mapping[str, str], run_dir: Path) -> LabProcess:
    """``guest_macs``: VMI network name -> the MAC to serve that network's pod IP to."""
    node = pod.node
    per_network: list[str] = []
    for i, nic in enumerate(pod.nics):
        net, tag = nic.network, f"n{i}"
        subnet = node.subnet_of(net)
        per_network += [
            f"--interface={net.bridge}",
            f"--dhcp-range=set:{tag},{subnet.network_address},static,{subnet.netmask}",
            f"--dhcp-host={guest_macs.get(net.name, nic.cni_mac)},set:{tag},{nic.ip},infinite",
            f"--dhcp-option=tag:{tag},option:router,{node.gateway_of(net)}",
        ]
    argv = in_netns(
        pod.netns,
        [
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--port=0",  # DHCP only, no DNS
            "--user=root",
            "--bind-interfaces",
            f"--pid-file={run_dir / 'dnsmasq.pid'}",
            f"--dhcp-leasefile={run_dir / 'dnsmasq.leases'}",
            *per_network,
            "--dhcp-authoritative",  # NAK a stale address at once instead of staying silent
            "--log-dhcp",
            "--log-facility=-",
        ],
    )
    return LabProcess(name=f"dnsmasq {pod.netns}", argv=argv, log_path=run_dir / "dnsmasq.log")
