"""A secondary network stretched across the nodes like a VLAN, with its own DHCP server.

Bridge binding on a Multus network whose CNI gives the pod interface no address (the bridge
CNI on a VLAN, as Harvester uses it): virt-launcher then runs no DHCP server for that NIC
(docs/kubevirt-facts.md M2), and the guest's DHCP goes out over the pod's bridge to the
network's own server. The lab builds it as one L2 across the nodes: a bridge per node
(``br-net1``, the bridge CNI's) with an uplink into a switch namespace (bridge ``sw``), which
holds the network's gateway and its one DHCP server. An address follows the VM (IPAM mode
``kept``); what must move is the switch's forwarding entry for the guest's MAC, from node a's
port to node b's.

The other IPAM mode, ``per-node`` (a subnet per node, as flannel through Multus gives), needs
nothing from here: that CNI gives the pod an address, so virt-launcher serves DHCP for the NIC
itself (M2) and the network is routed per node like the lab's pod network (lab.network).

The macvtap binding plugin's network (``mvt``, facts V2-V6) is built the same way with one
difference: a node has no bridge for it, its uplink ``up-mvt`` is the lower device on which every
pod's macvtap is made (lab.network), in mode bridge, so pods of one node reach each other inside
the node's macvlan port and everything else over the uplink. ``add_neighbour`` puts a pod on a
node that talks to the VMs over that same port (a macvlan in bridge mode): it is who suffers when
a migrated VM's stale source device keeps its MAC (facts V7).

The DHCP server is dnsmasq, a real general-purpose server, not a KubeVirt stand-in: it answers
any MAC and gives each MAC the lab registered a reserved address (``reserve``), so the lab can
probe that address before the guest asks; an unknown MAC gets one from the dynamic range.
"""

from __future__ import annotations

import ipaddress
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from lab.network import MACVTAP_LOWER, NODE_BRIDGE, Node, add_netns
from lab.process import LabProcess, wait_for
from lab.shell import ip, run

# kept: this module's stretched L2; per-node: a routed subnet per node served by virt-launcher.
IpamMode = Literal["kept", "per-node"]
SWITCH_BRIDGE: Final = "sw"
KEPT_SUBNET: Final = ipaddress.IPv4Network("192.168.77.0/24")
MACVTAP_SUBNET: Final = ipaddress.IPv4Network("192.168.78.0/24")
FIRST_NEIGHBOUR_HOST: Final = 230
LEASE_TIME: Final = "1h"  # a network's own server: renewals far beyond any scenario
FIRST_RESERVED_HOST: Final = 20
DNSMASQ: Final = "/usr/sbin/dnsmasq"


@dataclass
class _Server:
    """One dnsmasq on one L2 segment, with the reservations file it re-reads on SIGHUP."""

    netns: str
    iface: str
    subnet: ipaddress.IPv4Network
    run_dir: Path
    process: LabProcess | None = None
    # Address -> the MACs it is reserved for (one VM's MACs across a MAC change).
    reservations: dict[str, list[str]] = field(default_factory=dict)

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def hosts_file(self) -> Path:
        return self.run_dir / "hosts"

    @property
    def lease_file(self) -> Path:
        return self.run_dir / "leases"

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write_hosts()
        self.lease_file.touch()
        net = self.subnet
        argv = [
            "ip", "netns", "exec", self.netns, DNSMASQ,
            "--keep-in-foreground", "--conf-file=/dev/null", "--port=0", "--user=root",
            f"--interface={self.iface}", "--bind-interfaces", "--except-interface=lo",
            f"--dhcp-range={net.network_address + 100},{net.network_address + 200},{net.netmask},{LEASE_TIME}",
            "--dhcp-authoritative", f"--dhcp-hostsfile={self.hosts_file}",
            f"--dhcp-leasefile={self.lease_file}", f"--dhcp-option=option:router,{self.gateway}",
            "--log-dhcp", "--log-facility=-", f"--pid-file={self.run_dir / 'pid'}",
        ]  # fmt: skip
        self.process = LabProcess(name=f"dnsmasq {self.netns}", argv=argv, log_path=self.run_dir / "dnsmasq.log")
        wait_for(
            lambda: "DHCP, IP range" in self.process.log_tail(50) if self.process else False,
            timeout=10,
            what=f"dnsmasq on {self.netns}/{self.iface}",
        )

    def _write_hosts(self) -> None:
        # dnsmasq's "mac1,mac2,address": the address goes to whichever of the MACs asks.
        lines = (",".join([*macs, addr]) + "\n" for addr, macs in self.reservations.items())
        self.hosts_file.write_text("".join(lines))

    def reserve(self, mac: str, host: int) -> str:
        address = str(self.subnet.network_address + host)
        macs = self.reservations.setdefault(address, [])
        if mac in macs:
            return address
        macs.append(mac)
        self._write_hosts()
        if self.process is not None and self.process.alive():
            self.process.proc.send_signal(signal.SIGHUP)  # dnsmasq re-reads --dhcp-hostsfile
        return address

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


# How a node meets the stretched network: the bridge CNI's node bridge holding the uplink
# (net1 kept), or the bare uplink as the lower device of the pods' macvtaps (mvt).
NodeSide = Literal["bridge", "lower"]


@dataclass(frozen=True)
class Neighbour:
    """A pod on one node with a plain interface on the macvtap network (a macvlan in bridge mode on
    the node's uplink, as a second macvtap-network pod would have): it pings the VMs from there."""

    netns: str
    node: str
    address: str


class L2Network:
    """One stretched network of a lab (``net1`` kept, or the macvtap network); created once the
    nodes exist."""

    def __init__(
        self,
        *,
        lab_id: str,
        prefix: str,
        run_dir: Path,
        nodes: list[Node],
        name: str = "net1",
        subnet: ipaddress.IPv4Network = KEPT_SUBNET,
        node_side: NodeSide = "bridge",
    ) -> None:
        self.name = name
        self._prefix = f"{prefix}-{lab_id}"
        self.switch_netns = f"{self._prefix}-l2" if name == "net1" else f"{self._prefix}-{name}"
        self._node_side = node_side
        self._next_host = FIRST_RESERVED_HOST
        self._next_neighbour = FIRST_NEIGHBOUR_HOST
        self._hosts: dict[str, int] = {}  # VM name -> its host number on every subnet
        self._nodes = {node.name: node for node in nodes}
        if node_side == "bridge":
            for node in nodes:
                ip(node.netns, "link", "add", NODE_BRIDGE, "type", "bridge", "forward_delay", "0")
                ip(node.netns, "link", "set", NODE_BRIDGE, "up")
        self.server = self._build_switch(nodes, run_dir, subnet)
        self.server.start()

    @property
    def uplink(self) -> str:
        return "up-net1" if self._node_side == "bridge" else MACVTAP_LOWER

    def _build_switch(self, nodes: list[Node], run_dir: Path, subnet: ipaddress.IPv4Network) -> _Server:
        add_netns(self.switch_netns)
        ns = self.switch_netns
        ip(ns, "link", "add", SWITCH_BRIDGE, "type", "bridge", "forward_delay", "0")
        for node in nodes:
            port = f"port-{node.name}"
            run(
                [
                    "ip", "link", "add", self.uplink, "netns", node.netns, "type", "veth",
                    "peer", "name", port, "netns", ns,
                ]
            )  # fmt: skip
            if self._node_side == "bridge":
                ip(node.netns, "link", "set", self.uplink, "master", NODE_BRIDGE)
            ip(node.netns, "link", "set", self.uplink, "up")
            ip(ns, "link", "set", port, "master", SWITCH_BRIDGE)
            ip(ns, "link", "set", port, "up")
        server = _Server(netns=ns, iface=SWITCH_BRIDGE, subnet=subnet, run_dir=run_dir / f"{self.name}-dhcp")
        ip(ns, "addr", "add", f"{server.gateway}/{subnet.prefixlen}", "dev", SWITCH_BRIDGE)
        ip(ns, "link", "set", SWITCH_BRIDGE, "up")
        return server

    def add_neighbour(self, node: str) -> Neighbour:
        """A neighbour pod on ``node`` (macvtap network only), with a static address of the subnet."""
        if self._node_side != "lower":
            raise ValueError("neighbours share a macvtap network's lower device; net1 has none")
        host = self._next_neighbour
        self._next_neighbour += 1
        netns = f"{self._prefix}-nbr{host}"
        add_netns(netns)
        the_node = self._nodes[node]
        link = f"nbr{host}"
        ip(the_node.netns, "link", "add", "link", self.uplink, "name", link, "type", "macvlan", "mode", "bridge")
        ip(the_node.netns, "link", "set", link, "netns", netns)
        ip(netns, "link", "set", link, "name", "net1")
        address = str(self.server.subnet.network_address + host)
        ip(netns, "addr", "add", f"{address}/{self.server.subnet.prefixlen}", "dev", "net1")
        ip(netns, "link", "set", "net1", "up")
        return Neighbour(netns=netns, node=node, address=address)

    def reserve(self, *, vm: str, mac: str) -> str:
        """Reserve ``vm``'s address for ``mac`` (a VM keeps one address whatever its MACs)."""
        host = self._hosts.setdefault(vm, self._next_host)
        if host == self._next_host:
            self._next_host += 1
        return self.server.reserve(mac, host)

    def address_of(self, vm: str) -> str:
        """The address the network's server keeps for ``vm`` (on every node: one subnet)."""
        return str(self.server.subnet.network_address + self._hosts[vm])

    def fdb_port(self, mac: str) -> str | None:
        """The switch port that has learned ``mac``, e.g. ``port-a``; None if none has."""
        out = run(["ip", "netns", "exec", self.switch_netns, "bridge", "fdb", "show", "br", SWITCH_BRIDGE])
        for line in out.splitlines():
            words = line.split()
            if words and words[0] == mac.lower() and "dev" in words:
                return words[words.index("dev") + 1]
        return None

    def close(self) -> None:
        self.server.stop()
