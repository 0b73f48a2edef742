"""Network namespaces shaped like a small Kubernetes cluster with KubeVirt's bridge binding.

A *node* is a namespace that routes: every pod hangs off it through a veth whose node side
holds the pod subnet's gateway address (with proxy ARP, as Calico does), and the two nodes
reach each other's pod subnet over a veth pair. A *pod* namespace is laid out the way
virt-launcher lays out a pod for ``bridge`` binding: the CNI veth renamed ``eth0-nic``, the
bridge ``k6t-eth0`` holding it and the guest's ``tap0``, and a dummy ``eth0`` keeping the MAC
the CNI gave the pod. Each pod is its own L2 segment, so a guest's DHCP broadcasts only reach
its own pod's DHCP server (``lab.dhcp``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Literal

from lab.shell import CommandError, ip, run, sysctl

POD_BRIDGE = "k6t-eth0"
POD_NIC = "eth0-nic"
POD_DUMMY = "eth0"
# The node's bridge of a network served by its own DHCP server (lab.l2): the bridge CNI's.
NODE_BRIDGE = "br-net1"
FIRST_POD_HOST = 10
TAP_OWNER = 107  # KubeVirt's non-root launcher user; root QEMU (system mode) can open it too


def random_cni_mac() -> str:
    """A MAC like the ones bridge-style CNIs hand out (locally administered, 0a:58 prefix)."""
    return "0a:58:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(4))


def wait_for_path(path: str, *, timeout: float = 5.0) -> None:
    """devtmpfs makes a new macvtap's /dev/tapN asynchronously after the link exists."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} never appeared")
        time.sleep(0.01)


def unused_tap_index() -> int:
    """An interface index whose /dev/tapN does not exist (lab.network.PodNetwork._macvtap)."""
    while True:
        index = 10_000 + secrets.randbelow(1_000_000)
        if not os.path.exists(f"/dev/tap{index}"):
            return index


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


def kubevirt_pod_interface_name(network_name: str, *, multus: bool) -> str:
    """The pod interface KubeVirt gives a network (``pkg/network/namescheme``, facts D5): ``eth0``
    for the pod network, ``pod`` + the first 11 hex digits of SHA-256(network name) for a Multus
    one. The lab's own copy, kept apart from the sidecar's so that the two are checked against
    each other."""
    if not multus:
        return POD_DUMMY
    return "pod" + hashlib.sha256(network_name.encode()).hexdigest()[:11]


@dataclass(frozen=True)
class NetworkDef:
    """A network pods attach to: one /24 per node, ``10.<octet>.<node index>.0/24``.

    ``name`` is the VMI interface/network name (domain alias ``ua-<name>``); the pod side is named
    as KubeVirt's bridge binding names it (``pkg/network/link/names.go``): for the pod network
    the dummy ``eth0``, bridge ``k6t-eth0``, CNI veth renamed ``eth0-nic``, tap ``tap0``; for a
    Multus network ``pod<hash>``, ``k6t-<hash>``, ``<hash>-nic``, ``tap<hash>``.
    """

    name: str
    octet: int
    multus: bool = False
    # The VMI interface's binding on it. bridge: the pod side as virt-launcher lays out a bridge
    # binding; macvtap: the binding plugin's pod side, a macvtap device macvtap-cni made (facts V2, V3).
    binding: Literal["bridge", "macvtap"] = "bridge"
    # A network with its own DHCP server (lab.l2): the CNI gives the pod interface no address
    # and the node side is a port of the node's bridge, so virt-launcher serves no DHCP there.
    external_dhcp: bool = False

    @property
    def pod_link(self) -> str:
        return kubevirt_pod_interface_name(self.name, multus=self.multus)

    @property
    def _stem(self) -> str:
        return self.pod_link.removeprefix("pod")

    @property
    def bridge(self) -> str:
        return f"k6t-{self._stem}"

    @property
    def cni_nic(self) -> str:
        return f"{self._stem}-nic"

    @property
    def tap(self) -> str:
        """The domain interface's ``<target dev>``: the bridge binding's tap, or for the macvtap
        plugin the pod's macvtap device itself (facts V2: no tap of that name exists)."""
        if self.binding == "macvtap":
            return self.pod_link
        return "tap" + self.pod_link[3:] if self.multus else "tap0"


POD_NETWORK = NetworkDef(name="default", octet=244)
# A second bridge NIC on a Multus network with a subnet per node, served by virt-launcher (M2).
SECOND_NETWORK = NetworkDef(name="secondary", octet=245, multus=True)
NETWORKS = (POD_NETWORK, SECOND_NETWORK)
# The seed's Multus case, a bridge NIC on a Multus network named net1, in two IPAM modes:
# kept: one L2 across the nodes with the network's own DHCP server (lab.l2), no pod address;
# per-node: a subnet per node, as flannel through Multus gives, which virt-launcher serves.
NET1_KEPT = NetworkDef(name="net1", octet=77, multus=True, external_dhcp=True)
NET1_PER_NODE = NetworkDef(name="net1", octet=246, multus=True)
ROUTED_NETWORKS = (POD_NETWORK, SECOND_NETWORK, NET1_PER_NODE)
# The macvtap binding plugin's network (facts V2-V6): one L2 across the nodes behind each node's
# uplink (the macvtap's lower device), served by its own DHCP server (lab.l2), no pod address.
MACVTAP_NET = NetworkDef(name="mvt", octet=78, multus=True, binding="macvtap", external_dhcp=True)
# The node's uplink into that L2: the lower device every macvtap of the network is made on.
MACVTAP_LOWER = "up-mvt"
MACVTAP_TAP_OWNER = 107  # macvtap-cni gives the device's /dev/tapN to uid/gid 107 by default (V3)


@dataclass
class Node:
    """A node namespace routing one /24 per network for its pods."""

    name: str  # "a", "b"
    index: int  # 1 -> 10.244.1.0/24 (and 10.245.1.0/24)
    netns: str
    next_host: dict[str, int] = field(default_factory=dict)

    def subnet_of(self, network: NetworkDef) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"10.{network.octet}.{self.index}.0/24")

    def gateway_of(self, network: NetworkDef) -> str:
        return str(self.subnet_of(network).network_address + 1)

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return self.subnet_of(POD_NETWORK)

    @property
    def gateway(self) -> str:
        return self.gateway_of(POD_NETWORK)

    def allocate_ip(self, network: NetworkDef = POD_NETWORK) -> str:
        """The pod's address on ``network`` from this node's subnet; "" where the CNI gives none."""
        if network.external_dhcp:
            return ""
        host = self.next_host.get(network.name, FIRST_POD_HOST)
        self.next_host[network.name] = host + 1
        return str(self.subnet_of(network).network_address + host)

    def create(self) -> None:
        add_netns(self.netns)
        sysctl(self.netns, "net.ipv4.ip_forward", "1")
        sysctl(self.netns, "net.ipv4.conf.all.rp_filter", "0")
        sysctl(self.netns, "net.ipv4.conf.default.rp_filter", "0")


def link_nodes(left: Node, right: Node) -> None:
    """Join two nodes with a veth pair and route each one's subnets through the other."""
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
    for network in ROUTED_NETWORKS:
        ip(left.netns, "route", "add", str(right.subnet_of(network)), "via", str(right_addr))
        ip(right.netns, "route", "add", str(left.subnet_of(network)), "via", str(left_addr))


@dataclass
class PodNic:
    """One network of a pod: its IP, the MAC the CNI gave it, the node-side veth."""

    network: NetworkDef
    ip: str
    cni_mac: str
    host_veth: str


@dataclass
class PodNetwork:
    """The network side of one virt-launcher pod: the pod network, maybe a second network."""

    netns: str
    node: Node
    nics: list[PodNic]

    @property
    def primary(self) -> PodNic:
        return self.nics[0]

    @property
    def ip(self) -> str:
        return self.primary.ip

    @property
    def cni_mac(self) -> str:
        return self.primary.cni_mac

    @property
    def host_veth(self) -> str:
        return self.primary.host_veth

    @property
    def prefix_len(self) -> int:
        return self.node.subnet.prefixlen

    def nic(self, name: str) -> PodNic:
        for nic in self.nics:
            if nic.network.name == name:
                return nic
        raise KeyError(name)

    def create(self) -> None:
        add_netns(self.netns)
        sysctl(self.netns, "net.ipv6.conf.all.disable_ipv6", "1")
        for nic in self.nics:
            self._create_nic(nic)

    def _create_nic(self, nic: PodNic) -> None:
        node, net = self.node, nic.network
        if net.binding == "macvtap":
            self._macvtap(nic)
            return
        run(
            [
                "ip", "link", "add", net.cni_nic, "netns", self.netns, "type", "veth",
                "peer", "name", nic.host_veth, "netns", node.netns,
            ]
        )  # fmt: skip
        if net.external_dhcp:
            # The bridge CNI without IPAM: the node end is a port of the node's bridge, no more.
            ip(node.netns, "link", "set", nic.host_veth, "master", NODE_BRIDGE)
            ip(node.netns, "link", "set", nic.host_veth, "up")
        else:
            self._route_nic(nic)
        self._bridge_binding(nic)

    def _route_nic(self, nic: PodNic) -> None:
        node, net = self.node, nic.network
        # Node side: gateway address, a host route to the pod, proxy ARP for the rest of the subnet.
        ip(node.netns, "addr", "add", f"{node.gateway_of(net)}/32", "dev", nic.host_veth, "noprefixroute")
        sysctl(node.netns, f"net.ipv4.conf.{nic.host_veth}.proxy_arp", "1")
        sysctl(node.netns, f"net.ipv4.neigh.{nic.host_veth}.proxy_delay", "0")
        sysctl(node.netns, f"net.ipv4.conf.{nic.host_veth}.rp_filter", "0")
        ip(node.netns, "link", "set", nic.host_veth, "up")
        ip(node.netns, "route", "add", f"{nic.ip}/32", "dev", nic.host_veth)

    def _bridge_binding(self, nic: PodNic) -> None:
        """The pod side as virt-launcher lays out a bridge binding (facts D5, D7)."""
        net = nic.network
        ip(self.netns, "link", "add", net.bridge, "type", "bridge", "forward_delay", "0")
        ip(self.netns, "link", "set", net.cni_nic, "master", net.bridge)
        # virt-handler makes the tap its launcher's: uid/gid 107 for a non-root one (facts L4).
        ip(self.netns, "tuntap", "add", "dev", net.tap, "mode", "tap", "user", str(TAP_OWNER), "group", str(TAP_OWNER))
        ip(self.netns, "link", "set", net.tap, "master", net.bridge)
        ip(self.netns, "link", "set", net.tap, "up")
        add_placeholder_link(self.netns, net.pod_link, nic.cni_mac)
        # The bridge's own address (169.254.75.1<index>/32, the DHCP server's) is lab.dhcp's.
        for dev in (net.cni_nic, net.bridge):
            ip(self.netns, "link", "set", dev, "up")
        if nic.ip:
            # The dummy keeps the CNI's address (facts D7 for the pod network, M1 for a Multus
            # one): the fixer reads from it the address the guest must get (its closed loop), and
            # for a Multus NIC whether virt-launcher serves DHCP there at all.
            prefix = self.node.subnet_of(net).prefixlen
            ip(self.netns, "addr", "add", f"{nic.ip}/{prefix}", "dev", net.pod_link, "noprefixroute")
            # The address is local to the pod now: only the guest may answer ARP for it (D7).
            sysctl(self.netns, "net.ipv4.conf.all.arp_ignore", "1")
        if not net.multus:
            # virt-handler leaves a Multus NIC's dummy down (M1).
            ip(self.netns, "link", "set", net.pod_link, "up")

    def _macvtap(self, nic: PodNic) -> None:
        """What macvtap-cni's device plugin and CNI do for a pod (facts V3): a macvtap in mode
        bridge made on the node's uplink under a temporary name, moved into the pod, renamed to
        the interface KubeVirt asked for, given the spec's MAC (V6; else it keeps its random
        one), brought up, and its /dev/tapN handed to the launcher's user. No address, no bridge,
        no tap: the domain's interface is this device itself (V2)."""
        node, net = self.node, nic.network
        temp = "mvt" + secrets.token_hex(4)
        # A node has its own /dev; the lab's nodes share this machine's, where the device is named
        # after its ifindex, which each namespace counts on its own: the lab picks an index no
        # namespace uses, or a target's QEMU would open the source's /dev/tapN.
        index = unused_tap_index()
        ip(
            node.netns, "link", "add", "link", MACVTAP_LOWER, "name", temp, "index", str(index),
            "type", "macvtap", "mode", "bridge",
        )  # fmt: skip
        ip(node.netns, "link", "set", temp, "netns", self.netns)
        ip(self.netns, "link", "set", temp, "name", net.pod_link)
        # Without a spec MAC the device keeps a random one: the lab's random_cni_mac stands for it.
        ip(self.netns, "link", "set", net.pod_link, "address", nic.cni_mac)
        ip(self.netns, "link", "set", net.pod_link, "up")
        tap = run(["ip", "netns", "exec", self.netns, "ls", f"/sys/class/net/{net.pod_link}/macvtap"]).split()
        # libvirt opens /dev/tap<ifindex> of the device it is given; the node's index must have
        # survived the move into the pod, or the character device is another name.
        if tap != [f"tap{index}"]:
            raise RuntimeError(f"macvtap {net.pod_link} in {self.netns}: ifindex {index} but device {tap}")
        wait_for_path(f"/dev/tap{index}")
        os.chown(f"/dev/tap{index}", MACVTAP_TAP_OWNER, MACVTAP_TAP_OWNER)

    def delete(self, *, timeout: float = 30.0) -> None:
        # Deleting the pod namespace destroys the CNI veths and with them the node-side ends and
        # routes, but the kernel does it asynchronously: wait, so a deleted pod is really gone.
        delete_netns(self.netns)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any(ip(self.node.netns, "link", "show", n.host_veth, check=False).strip() for n in self.nics):
                return
            time.sleep(0.1)
