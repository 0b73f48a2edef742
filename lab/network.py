"""Network namespaces shaped like a small Kubernetes cluster with KubeVirt's bridge binding.

A *node* is a namespace that routes: every pod hangs off it through a veth whose node side
holds the pod subnet's gateway address (with proxy ARP, as Calico does), and the two nodes
reach each other's pod subnet over a veth pair. A *pod* namespace is laid out the way
virt-launcher lays out a pod for ``bridge`` binding: the CNI veth renamed ``eth0-nic``, the
bridge ``k6t-eth0`` holding it and the guest's ``tap0``, and a dummy ``eth0`` keeping the MAC
the CNI gave the pod. Each pod is its own L2 segment, so a guest's DHCP broadcasts only reach
its own pod's DHCP server.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, field

from lab.shell import CommandError, ip, run, sysctl

POD_BRIDGE = "k6t-eth0"
POD_NIC = "eth0-nic"
POD_DUMMY = "eth0"
# The in-pod DHCP server's own address in the pod subnet (unused by any pod: pods start at .10).
DHCP_SERVER_HOST = 2
FIRST_POD_HOST = 10


def random_cni_mac() -> str:
    """A MAC like the ones bridge-style CNIs hand out (locally administered, 0a:58 prefix)."""
    return "0a:58:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(4))


def netns_exists(name: str) -> bool:
    return name in run(["ip", "netns", "list"]).split()


def add_netns(name: str) -> None:
    run(["ip", "netns", "add", name])
    ip(name, "link", "set", "lo", "up")


def delete_netns(name: str) -> None:
    if netns_exists(name):
        run(["ip", "netns", "delete", name], check=False)


def add_placeholder_link(netns: str, name: str, mac: str) -> None:
    """A link that only carries a MAC: ``dummy`` where the kernel has it, else an unused tap.

    Some lab kernels are built without the dummy driver (and cannot load modules); a tap
    nobody opens is just as inert and shows the same MAC to whoever reads it.
    """
    try:
        ip(netns, "link", "add", name, "address", mac, "type", "dummy")
    except CommandError:
        ip(netns, "tuntap", "add", "dev", name, "mode", "tap")
        ip(netns, "link", "set", name, "address", mac)


@dataclass
class Node:
    """A node namespace routing for one /24 pod subnet."""

    name: str  # "a", "b"
    index: int  # 1 -> 10.244.1.0/24
    netns: str
    next_host: int = FIRST_POD_HOST
    pods: list[str] = field(default_factory=list)

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"10.244.{self.index}.0/24")

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def dhcp_server(self) -> str:
        return str(self.subnet.network_address + DHCP_SERVER_HOST)

    def allocate_ip(self) -> str:
        addr = str(self.subnet.network_address + self.next_host)
        self.next_host += 1
        return addr

    def create(self) -> None:
        add_netns(self.netns)
        sysctl(self.netns, "net.ipv4.ip_forward", "1")
        sysctl(self.netns, "net.ipv4.conf.all.rp_filter", "0")
        sysctl(self.netns, "net.ipv4.conf.default.rp_filter", "0")


def link_nodes(left: Node, right: Node) -> None:
    """Join two nodes with a veth pair and route each one's pod subnet through the other."""
    left_if, right_if = f"to-{right.name}", f"to-{left.name}"
    run(
        [
            "ip", "link", "add", left_if, "netns", left.netns, "type", "veth",
            "peer", "name", right_if, "netns", right.netns,
        ]
    )  # fmt: skip
    # A /30 per pair, numbered from the node indexes so it stays unique.
    base = ipaddress.IPv4Address(f"10.0.{left.index}.{right.index * 4}")
    left_addr, right_addr = base + 1, base + 2
    ip(left.netns, "addr", "add", f"{left_addr}/30", "dev", left_if)
    ip(right.netns, "addr", "add", f"{right_addr}/30", "dev", right_if)
    ip(left.netns, "link", "set", left_if, "up")
    ip(right.netns, "link", "set", right_if, "up")
    ip(left.netns, "route", "add", str(right.subnet), "via", str(right_addr))
    ip(right.netns, "route", "add", str(left.subnet), "via", str(left_addr))


@dataclass
class PodNetwork:
    """The network side of one virt-launcher pod (one managed NIC, like KubeVirt's pod network)."""

    netns: str
    node: Node
    host_veth: str  # node-side end of the CNI veth
    ip: str
    cni_mac: str
    taps: tuple[str, ...] = ("tap0",)

    @property
    def prefix_len(self) -> int:
        return self.node.subnet.prefixlen

    def create(self) -> None:
        node = self.node
        add_netns(self.netns)
        sysctl(self.netns, "net.ipv6.conf.all.disable_ipv6", "1")
        run(
            [
                "ip", "link", "add", POD_NIC, "netns", self.netns, "type", "veth",
                "peer", "name", self.host_veth, "netns", node.netns,
            ]
        )  # fmt: skip
        # Node side: gateway address, a host route to the pod, proxy ARP for the rest of the subnet.
        ip(node.netns, "addr", "add", f"{node.gateway}/32", "dev", self.host_veth, "noprefixroute")
        sysctl(node.netns, f"net.ipv4.conf.{self.host_veth}.proxy_arp", "1")
        sysctl(node.netns, f"net.ipv4.neigh.{self.host_veth}.proxy_delay", "0")
        sysctl(node.netns, f"net.ipv4.conf.{self.host_veth}.rp_filter", "0")
        ip(node.netns, "link", "set", self.host_veth, "up")
        ip(node.netns, "route", "add", f"{self.ip}/32", "dev", self.host_veth)
        # Pod side: bridge binding layout.
        ip(self.netns, "link", "add", POD_BRIDGE, "type", "bridge", "forward_delay", "0")
        ip(self.netns, "link", "set", POD_NIC, "master", POD_BRIDGE)
        for tap in self.taps:
            ip(self.netns, "tuntap", "add", "dev", tap, "mode", "tap")
            ip(self.netns, "link", "set", tap, "master", POD_BRIDGE)
            ip(self.netns, "link", "set", tap, "up")
        add_placeholder_link(self.netns, POD_DUMMY, self.cni_mac)
        ip(self.netns, "addr", "add", f"{node.dhcp_server}/{self.prefix_len}", "dev", POD_BRIDGE)
        for dev in (POD_NIC, POD_BRIDGE, POD_DUMMY):
            ip(self.netns, "link", "set", dev, "up")

    def delete(self) -> None:
        # Deleting the pod namespace destroys eth0-nic and with it the node-side veth and route.
        delete_netns(self.netns)
