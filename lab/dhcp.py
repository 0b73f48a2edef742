"""The DHCP server of a lab pod: dnsmasq on ``k6t-eth0``, serving the pod IP to one MAC.

It stands in for virt-launcher's built-in DHCP server: one static lease (pod IP, gateway,
a lease long enough that the guest never renews by itself) for the MAC this pod expects
the guest to have.
"""

from __future__ import annotations

from pathlib import Path

from lab.network import POD_BRIDGE, PodNetwork
from lab.process import LabProcess
from lab.shell import in_netns


def start_dnsmasq(*, pod: PodNetwork, guest_mac: str, run_dir: Path) -> LabProcess:
    node = pod.node
    argv = in_netns(
        pod.netns,
        [
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--port=0",  # DHCP only, no DNS
            "--user=root",
            f"--interface={POD_BRIDGE}",
            "--bind-interfaces",
            f"--pid-file={run_dir / 'dnsmasq.pid'}",
            f"--dhcp-leasefile={run_dir / 'dnsmasq.leases'}",
            f"--dhcp-range={node.subnet.network_address},static,{node.subnet.netmask}",
            f"--dhcp-host={guest_mac},{pod.ip},infinite",
            f"--dhcp-option=option:router,{node.gateway}",
            "--dhcp-authoritative",  # NAK a stale address at once instead of staying silent
            "--log-dhcp",
            "--log-facility=-",
        ],
    )
    return LabProcess(name=f"dnsmasq {pod.netns}", argv=argv, log_path=run_dir / "dnsmasq.log")
