"""The DHCP server of a lab pod: a stand-in for virt-launcher's, one per bridge-bound network.

virt-launcher serves each bridge-bound interface from its own single-client DHCP server on the
pod's bridge (facts D1 to D4 in docs/kubevirt-facts.md): it answers one MAC and drops every
other packet, ACKs every REQUEST with the pod's address, never NAKs, hands out a 999-day lease
and identifies itself as ``169.254.75.1<interface index>``, an address the bridge holds as /32.
The server itself is ``lab/dhcpd`` (Go, on the packet library virt-launcher uses), built by
``scripts/install-lab.sh``.

Which MAC it answers is KubeVirt's rule, not ours (fact D2, ``resolveMacAddress``): the VMI
spec's ``macAddress``; from v1.9 on, else the MAC in the VMI's status; else the MAC the CNI
gave the pod. The sidecar has its own copy of that rule; this one is deliberately separate, so
that the lab follows KubeVirt even if the product gets it wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final

from bridge_migration_contract import kubevirt_family
from lab.network import PodNetwork
from lab.process import LabProcess
from lab.shell import ip as ip_in

DHCPD: Final = Path("/var/cache/bridge-migration/bin/bml-dhcpd")
# What the lab's pods use as cluster DNS in the DNS option (no guest resolves names).
CLUSTER_DNS: Final = "10.96.0.10"
SEARCH_DOMAINS: Final = ("default.svc.cluster.local", "svc.cluster.local", "cluster.local")

DEFAULT_KUBEVIRT_VERSION: Final = "v1.9.0"


def served_mac(*, spec_mac: str | None, status_mac: str | None, pod_mac: str, version: str) -> str:
    """The one MAC virt-launcher's DHCP server answers, by KubeVirt's rule for ``version``.

    Only the version parsing is shared with the product (the contract's ``kubevirt_family``);
    the rule itself is the lab's own copy."""
    if spec_mac:
        return spec_mac
    if status_mac and kubevirt_family(version) == "v1.9+":
        return status_mac
    return pod_mac


def server_ip(index: int) -> str:
    """The server identifier of the VMI's ``index``-th interface (and its bridge's /32)."""
    return f"169.254.75.1{index}"


def start_dhcp_servers(
    *, pod: PodNetwork, client_macs: Mapping[str, str], run_dir: Path, hostname: str
) -> list[LabProcess]:
    """One server per network of the pod; ``client_macs``: network name -> the MAC it answers.

    The interface index is the network's position in the pod, which the lab keeps equal to
    the VMI's interface order.
    """
    if not DHCPD.exists():
        raise RuntimeError(f"{DHCPD} missing: run ./scripts/install-lab.sh")
    servers: list[LabProcess] = []
    node = pod.node
    for index, nic in enumerate(pod.nics):
        net = nic.network
        if not nic.ip:
            continue  # no pod address, no server: the network's own answers (facts M2, lab.l2)
        ip_in(pod.netns, "addr", "add", f"{server_ip(index)}/32", "dev", net.bridge)
        gateway = node.gateway_of(net)
        argv = [
            "ip", "netns", "exec", pod.netns, str(DHCPD),
            f"-iface={net.bridge}",
            f"-client-mac={client_macs[net.name]}",
            f"-client-ip={nic.ip}/{node.subnet_of(net).prefixlen}",
            f"-router={gateway}",
            f"-server-ip={server_ip(index)}",
            "-mtu=1500",
            f"-dns={CLUSTER_DNS}",
            f"-search={','.join(SEARCH_DOMAINS)}",
            f"-hostname={hostname}",
            # The pod's routes other than its own subnet: the default route (KubeVirt keeps it).
            f"-route=0.0.0.0/0,{gateway}",
        ]  # fmt: skip
        servers.append(
            LabProcess(name=f"dhcpd {pod.netns} {net.bridge}", argv=argv, log_path=run_dir / f"dhcpd-{net.name}.log")
        )
    return servers
