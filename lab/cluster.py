"""The lab itself: two nodes, virt-launcher pods with their own libvirtd, guests, migrations.

A migration works the way KubeVirt does it: a NEW target pod (new namespace, new libvirt
daemon, new IP from the target node, new CNI MAC) is created first, the domain migrates
peer-to-peer into it with KubeVirt's flags, and the source pod is deleted afterwards.
Everything is torn down by :meth:`Lab.close`, which also runs at interpreter exit.

KubeVirt's own reconcile of the VMI's NICs runs beside every pod's domain, as virt-handler's
syncs would (``Lab(reconcile=...)``, lab/reconcile.py; on by default).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
import libvirt

from bridge_migration_contract import (
    ALLOW_POD_BRIDGE_MIGRATION,
    DEFAULT_KEYS,
    FixerDelivery,
    MacPolicy,
    NicRefresh,
    domain_alias,
    dump_macs,
)
from lab.cgroups import LimitedGroup
from lab.cleanup import cleanup, kill_namespace_processes
from lab.console import ConsoleTail
from lab.container import IMAGE_UID
from lab.dhcp import DEFAULT_KUBEVIRT_VERSION, served_mac, start_dhcp_servers
from lab.domain import Nic, domain_name, domain_xml
from lab.events import EventLog, LifecycleEvent, ensure_event_loop
from lab.guests import DEFAULT_GUEST, GuestImage, GuestType, guest_image
from lab.l2 import MACVTAP_SUBNET, IpamMode, L2Network
from lab.launcher_hooks import LauncherHooks, define_domain_through_hooks
from lab.libvirtd import LAUNCHER_UID, LibvirtDaemon, LibvirtMode
from lab.network import (
    MACVTAP_NET,
    NET1_KEPT,
    NET1_PER_NODE,
    NETWORKS,
    POD_NETWORK,
    NetworkDef,
    Node,
    PodNetwork,
    PodNic,
    link_nodes,
    random_cni_mac,
)
from lab.paths import PREFIX, RUN_ROOT
from lab.process import LabProcess
from lab.reconcile import ReconcileMode, Reconciler, ReconcileTiming, timing_of, with_link_states
from lab.sidecar import DEFAULT_LINK_PAUSE_MS, Sidecar
from lab.stuntime import stop_all as stop_echo_streams
from lab.vmi import lab_vmi
from webhook.macs import pinned_mac as webhook_pinned_mac

log = logging.getLogger(__name__)

# What virt-launcher asks libvirt for: live, peer-to-peer (source daemon drives the target
# daemon itself), and the domain becomes persistent on the target.
MIGRATION_FLAGS = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
NIC_NAME = "default"  # the VMI interface name; its domain alias is ua-default
KEEP_FILES_ENV = "BML_LAB_KEEP_FILES"
# Every lab id this process created, so a test session can sweep up after itself (and only itself).
CREATED_LAB_IDS: list[str] = []


def pinned_mac(namespace: str, vmi: str, interface: str) -> str:
    """The MAC the webhook pins under policy ``pin``: the lab asks the webhook's own function."""
    return webhook_pinned_mac(namespace=namespace, vmi_name=vmi, interface=interface)


def _mac_in(domain_xml: str, interface: str) -> str | None:
    """The MAC of the ``ua-<interface>`` NIC in a domain XML."""
    for iface in ET.fromstring(domain_xml).iter("interface"):
        alias = iface.find("alias")
        mac = iface.find("mac")
        if alias is not None and alias.get("name") == domain_alias(interface) and mac is not None:
            return mac.get("address")
    return None


def _cni_mac(network: NetworkDef, spec_macs: Mapping[str, str]) -> str:
    """The MAC the CNI gives the pod interface: virt-controller asks a Multus network's CNI for
    the spec's MAC (facts M3); the pod network's CNI picks its own."""
    if network.multus and network.name in spec_macs:
        return spec_macs[network.name]
    return random_cni_mac()


@dataclass
class Pod:
    """One virt-launcher pod: network, DHCP server, libvirt daemon and maybe our sidecar."""

    name: str
    net: PodNetwork
    run_dir: Path
    guest_mac: str  # the MAC this pod's DHCP server serves on the pod network
    daemon: LibvirtDaemon
    dhcp_servers: list[LabProcess]
    conn: Any = None
    events: EventLog | None = None
    sidecar: Sidecar | None = None
    hooks: LauncherHooks | None = None  # the lab's virt-launcher hook client for the sidecar
    sidecar_exit: int | None = None  # the sidecar's exit code after Shutdown
    guest_macs: dict[str, str] = field(default_factory=dict)  # every network: name -> MAC served
    reconciler: Reconciler | None = None  # KubeVirt's reconcile of the VMI in this pod (lab/reconcile.py)

    @property
    def ip(self) -> str:
        return self.net.ip

    @property
    def cni_mac(self) -> str:
        return self.net.cni_mac

    @property
    def node(self) -> str:
        return self.net.node.name

    def lifecycle(self) -> EventLog:
        assert self.events is not None
        return self.events


@dataclass
class Vm:
    """A VMI: its domain lives in ``pod``; ``pods`` is every pod it has lived in."""

    namespace: str
    name: str
    policy: MacPolicy
    with_sidecar: bool
    ping: str | None
    console: ConsoleTail
    pod: Pod
    pods: list[Pod] = field(default_factory=list)
    networks: tuple[NetworkDef, ...] = (POD_NETWORK,)
    guest: GuestImage | None = None  # what it boots (None: a Vm made outside Lab.start_vm)
    states: dict[str, str] = field(default_factory=dict)  # VMI interface -> its spec ``state`` (down)

    @property
    def domain_name(self) -> str:
        return domain_name(self.namespace, self.name)

    def domain(self) -> Any:
        return self.pod.conn.lookupByName(self.domain_name)

    def domain_mac(self, interface: str = NIC_NAME) -> str | None:
        """The MAC of the ``ua-<interface>`` NIC in the live domain XML."""
        return _mac_in(self.domain().XMLDesc(0), interface)

    def guest_nic(self, network: str = NIC_NAME) -> str:
        """The name the guest gives the NIC of VMI network ``network`` (eth0; ens3 for Debian)."""
        index = [n.name for n in self.networks].index(network)
        if self.guest is None or self.guest.kind == "busybox":
            return f"eth{index}"
        return self.guest.nic_name(self.domain().XMLDesc(0), network, index)

    def guest_nics(self) -> dict[str, str]:
        """Guest NIC name -> VMI network, in the VMI's interface order."""
        return {self.guest_nic(n.name): n.name for n in self.networks}

    def guest_address(self, nic: str | None = None) -> str | None:
        """The address of the guest NIC's last DHCP ack (``ip/prefix``), from its console;
        ``nic`` defaults to the pod network's."""
        acks = self.console.events("dhcp-ack", nic=nic or self.guest_nic())
        return acks[-1].fields.get("ip") if acks else None


@dataclass
class MigrationRecord:
    vm: str
    source_pod: str
    target_pod: str
    started: float  # migrateToURI3 called
    resumed: float  # target RESUMED/MIGRATED: the guest runs in the target pod from here on
    finished: float  # migrateToURI3 returned (the source confirms after the target resumed)
    target_events: list[LifecycleEvent]
    source_events: list[LifecycleEvent]


class Lab:
    """Context manager owning every namespace and process of one lab run."""

    def __init__(
        self,
        *,
        lab_id: str | None = None,
        keep_files: bool | None = None,
        link_pause_ms: int = DEFAULT_LINK_PAUSE_MS,
        play_hooks: bool = True,
        sidecar_limits: bool = False,
        sidecar_image: str | None = None,
        kubevirt_version: str = DEFAULT_KUBEVIRT_VERSION,
        libvirt_mode: LibvirtMode = "session",
        guest: GuestType = DEFAULT_GUEST,
        nic_refresh: NicRefresh | None = None,
        net1: IpamMode | None = None,
        sidecar_delivery: FixerDelivery = "hook",
        reconcile: ReconcileTiming | ReconcileMode = "kubevirt",
        macvtap: bool = False,
    ) -> None:
        # The guest type every VM of this lab boots (lab/guests.py); checked before anything starts.
        self.guest = guest_image(guest)
        self.id = lab_id or secrets.token_hex(2)
        CREATED_LAB_IDS.append(self.id)
        self.run_dir = RUN_ROOT / self.id
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # BML_LAB_KEEP_FILES=1 keeps logs and consoles under /run/bml-lab/<id> for a post-mortem.
        self.keep_files = keep_files if keep_files is not None else os.environ.get(KEEP_FILES_ENV) == "1"
        self.link_pause_ms = link_pause_ms  # passed to every sidecar (--link-pause-ms)
        # inject: each sidecar runs as the webhook's injected container (--delivery inject); nobody
        # calls a hook then, as virt-launcher calls none on a container it did not ask for.
        self.sidecar_delivery: FixerDelivery = sidecar_delivery
        # call Info/OnDefineDomain/Shutdown on sidecars, as virt-launcher
        self.play_hooks = play_hooks and sidecar_delivery == "hook"
        # Run each sidecar inside real cgroups with KubeVirt's hook-sidecar limits (64M, 200m).
        self.sidecar_limits = sidecar_limits
        # Run each sidecar from this image (podman, uid 107, in the pod's network namespace)
        # instead of from the checkout's venv.
        self.sidecar_image = sidecar_image
        # The KubeVirt version the lab plays: it decides which MAC a pod's DHCP server answers,
        # and the sidecar is told it the way the webhook tells it (the pod annotation).
        self.kubevirt_version = kubevirt_version
        # session: each pod's daemon and QEMU run as uid 107, as KubeVirt's non-root launcher
        # (the default); system: a root launcher's daemon. QEMU as 107 writes the consoles and
        # migration sockets here, so the lab's directory is that user's in session mode.
        # The VMI's nic-refresh annotation (what a user sets for a NetworkManager guest); None: unset.
        self.nic_refresh = nic_refresh
        # KubeVirt's reconcile stand-in beside every domain (lab/reconcile.py): its timing, or
        # "kubevirt" (KubeVirt's moments), "worst" (a target's first sync right after our
        # change) or "off".
        self.reconcile = timing_of(reconcile)
        self.libvirt_mode: LibvirtMode = libvirt_mode
        if libvirt_mode == "session":
            os.chown(self.run_dir, LAUNCHER_UID, LAUNCHER_UID)
        self.nodes: dict[str, Node] = {}
        # The seed's Multus network for VMs started with net1=True, in this IPAM mode (lab.l2).
        self.net1_mode: IpamMode | None = net1
        self.l2: L2Network | None = None
        # The macvtap binding plugin's network (lab.l2, lab.network MACVTAP_NET), for VMs started
        # with macvtap=True; its L2 exists once the nodes do.
        self.macvtap = macvtap
        self.mvt: L2Network | None = None
        self._lingering: list[threading.Timer] = []
        self.pods: list[Pod] = []
        self.vms: list[Vm] = []
        self._pod_seq = 0
        self._migration_seq = 0
        self._closed = False
        ensure_event_loop()
        atexit.register(self.close)

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- topology -----------------------------------------------------------------------
    def add_nodes(self, *names: str) -> None:
        """Create node namespaces and link every pair of them."""
        for name in names:
            node = Node(name=name, index=len(self.nodes) + 1, netns=f"{PREFIX}-{self.id}-node-{name}")
            node.create()
            for other in self.nodes.values():
                link_nodes(other, node)
            self.nodes[name] = node
        if self.net1_mode == "kept" and self.l2 is None:
            self.l2 = L2Network(lab_id=self.id, prefix=PREFIX, run_dir=self.run_dir, nodes=list(self.nodes.values()))
        if self.macvtap and self.mvt is None:
            self.mvt = L2Network(
                lab_id=self.id,
                prefix=PREFIX,
                run_dir=self.run_dir,
                nodes=list(self.nodes.values()),
                name=MACVTAP_NET.name,
                subnet=MACVTAP_SUBNET,
                node_side="lower",
            )

    @property
    def net1(self) -> NetworkDef:
        """The ``net1`` network of this lab's IPAM mode."""
        if self.net1_mode is None:
            raise ValueError("this lab has no net1 network (Lab(net1='kept' or 'per-node'))")
        return NET1_KEPT if self.net1_mode == "kept" else NET1_PER_NODE

    def create_pod(
        self,
        *,
        vm: str,
        node: str,
        spec_macs: Mapping[str, str] | None = None,
        status_macs: Mapping[str, str] | None = None,
        networks: Sequence[NetworkDef] = (POD_NETWORK,),
    ) -> Pod:
        """A virt-launcher pod on ``node``: namespace, libvirtd and connection, and a DHCP server
        per network that answers the MAC KubeVirt's rule picks from the VMI's spec MACs
        (``spec_macs``), its status MACs (``status_macs``) and the pod's own CNI MAC."""
        self._pod_seq += 1
        seq = self._pod_seq
        the_node = self.nodes[node]
        name = f"virt-launcher-{vm}-{seq}"
        run_dir = self.run_dir / f"pod{seq}"
        run_dir.mkdir(parents=True, exist_ok=True)
        net = PodNetwork(
            netns=f"{PREFIX}-{self.id}-pod{seq}",
            node=the_node,
            nics=[
                PodNic(
                    network=network,
                    ip=the_node.allocate_ip(network),
                    cni_mac=_cni_mac(network, spec_macs or {}),
                    host_veth=f"v{self.id}p{seq}" + (f"n{i}" if i else ""),
                )
                for i, network in enumerate(networks)
            ],
        )
        net.create()
        macs = {
            nic.network.name: served_mac(
                spec_mac=(spec_macs or {}).get(nic.network.name),
                status_mac=(status_macs or {}).get(nic.network.name),
                pod_mac=nic.cni_mac,
                version=self.kubevirt_version,
            )
            for nic in net.nics
        }
        servers = start_dhcp_servers(pod=net, client_macs=macs, run_dir=run_dir, hostname=name)
        daemon = LibvirtDaemon(netns=net.netns, run_dir=run_dir, mode=self.libvirt_mode)
        pod = Pod(
            name=name,
            net=net,
            run_dir=run_dir,
            guest_mac=macs[net.primary.network.name],
            daemon=daemon,
            dhcp_servers=servers,
            guest_macs=macs,
        )
        self.pods.append(pod)
        daemon.start()
        pod.conn = daemon.connect()
        pod.events = EventLog(pod.conn)
        return pod

    def create_target_pod(self, vm: Vm, *, node: str) -> Pod:
        """The pod a migration of ``vm`` goes to: the VMI's status reports the MACs the guest
        has now (virt-handler reads them from the domain), the spec keeps the pinned ones."""
        return self.create_pod(
            vm=vm.name,
            node=node,
            spec_macs=self.spec_macs(vm.namespace, vm.name, vm.policy, vm.networks),
            status_macs={n.name: mac for n in vm.networks if (mac := vm.domain_mac(n.name))},
            networks=vm.networks,
        )

    @staticmethod
    def spec_macs(namespace: str, vmi: str, policy: MacPolicy, networks: Sequence[NetworkDef]) -> dict[str, str]:
        """The VMI spec's ``macAddress`` per interface: the webhook pins them under ``pin`` only."""
        return {n.name: pinned_mac(namespace, vmi, n.name) for n in networks} if policy == "pin" else {}

    @staticmethod
    def annotations(*, namespace: str, vmi: str, policy: MacPolicy, networks: Sequence[NetworkDef]) -> dict[str, str]:
        """The VMI (and so virt-launcher pod) annotations the webhook would have set."""
        annotations = {ALLOW_POD_BRIDGE_MIGRATION: "", DEFAULT_KEYS.mac_policy: policy}
        if policy == "pin":
            annotations[DEFAULT_KEYS.macs] = dump_macs({n.name: pinned_mac(namespace, vmi, n.name) for n in networks})
        return annotations

    def start_sidecar(self, pod: Pod, *, namespace: str, vmi: str, policy: MacPolicy) -> None:
        networks = [nic.network for nic in pod.net.nics]
        annotations = self.annotations(namespace=namespace, vmi=vmi, policy=policy, networks=networks)
        if self.nic_refresh is not None:
            annotations[DEFAULT_KEYS.nic_refresh] = self.nic_refresh
        # The webhook's pod mutation names the KubeVirt version on every launcher pod it sees.
        annotations[DEFAULT_KEYS.kubevirt_version] = self.kubevirt_version
        if self.sidecar_image is not None:
            # In a pod the launcher's libvirt socket belongs to the user the sidecar runs as.
            pod.daemon.admit_user(IMAGE_UID, "qemu")
        pod.sidecar = Sidecar(
            netns=pod.net.netns,
            libvirt_uri=pod.daemon.uri,
            domain=domain_name(namespace, vmi),
            run_dir=pod.run_dir / "sidecar",
            annotations=annotations,
            link_pause_ms=self.link_pause_ms,
            limits=LimitedGroup(f"{self.id}-{pod.name}") if self.sidecar_limits else None,
            image=self.sidecar_image,
            libvirt_socket=pod.daemon.socket,
            libvirt_runtime=pod.daemon.runtime_dir,
            delivery=self.sidecar_delivery,
        )
        pod.sidecar.wait_healthy()

    def vmi_object(self, vm: Vm, *, live_xml: str | None = None) -> dict[str, Any]:
        """The VMI as virt-handler holds it. Its status reports each NIC's MAC from the running
        domain: ``live_xml`` when given (the reconcile stand-in passes what it read from its own
        connection), else the domain where ``vm`` runs; before the domain exists there is no status."""
        annotations = self.annotations(namespace=vm.namespace, vmi=vm.name, policy=vm.policy, networks=vm.networks)
        if self.nic_refresh is not None:
            annotations[DEFAULT_KEYS.nic_refresh] = self.nic_refresh
        macs = self.spec_macs(vm.namespace, vm.name, vm.policy, vm.networks)
        status: dict[str, str] | None = None
        if live_xml is not None:
            status = {n.name: mac for n in vm.networks if (mac := _mac_in(live_xml, n.name))}
        else:
            with contextlib.suppress(libvirt.libvirtError):
                status = {n.name: mac for n in vm.networks if (mac := vm.domain_mac(n.name))}
        return lab_vmi(
            namespace=vm.namespace,
            name=vm.name,
            networks=vm.networks,
            annotations=annotations,
            macs=macs,
            status_macs=status,
            states=vm.states,
        )

    def _start_reconciler(self, pod: Pod, vm: Vm, *, migration_target: bool) -> None:
        """KubeVirt's reconcile of ``vm`` in ``pod``, unless the lab's reconcile is off."""
        if self.reconcile.mode == "off":
            return
        pod.reconciler = Reconciler(
            pod=pod.name,
            uri=pod.daemon.uri,
            netns=pod.net.netns,
            domain=vm.domain_name,
            vmi=lambda xml: self.vmi_object(vm, live_xml=xml),
            timing=self.reconcile,
            kubevirt_version=self.kubevirt_version,
            migration_target=migration_target,
        )

    def _launcher_hooks(self, pod: Pod, vm: Vm, domain_xml: str) -> str:
        """virt-launcher's hook calls (Info, OnDefineDomain) when the pod has our sidecar."""
        if not self.play_hooks or pod.sidecar is None:
            return domain_xml
        xml, pod.hooks = define_domain_through_hooks(pod.sidecar.hook_dir, domain_xml, self.vmi_object(vm))
        return xml

    @staticmethod
    def _runs_a_domain(pod: Pod) -> bool:
        try:
            return pod.conn is not None and bool(pod.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE))
        except libvirt.libvirtError:
            return False

    def delete_pod(self, pod: Pod) -> None:
        """Delete a pod: reconcile, sidecar, domain (if still there), daemon, DHCP server, namespace."""
        if pod.reconciler is not None:
            pod.reconciler.stop()  # its records stay readable
        if pod.hooks is not None:
            # virt-launcher's goodbye: the sidecar answers Shutdown and exits on its own.
            try:
                pod.hooks.shutdown()
                if pod.sidecar is not None:
                    pod.sidecar_exit = pod.sidecar.process.proc.wait(timeout=15)
                    pod.sidecar.release_limits()
            except (grpc.RpcError, subprocess.TimeoutExpired) as exc:
                log.warning("sidecar in %s did not shut down on request: %s", pod.name, exc)
            pod.hooks.close()
            pod.hooks = None
        if pod.sidecar is not None and pod.sidecar.delivery == "inject" and not self._runs_a_domain(pod):
            # No Shutdown call for an injected container: it ends itself once the VM left the pod.
            pod.sidecar_exit = pod.sidecar.wait_end()
        if pod.sidecar is not None:
            pod.sidecar.stop()
        if pod.conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                for dom in pod.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                    dom.destroy()
            if pod.events is not None:
                pod.events.close()
            with contextlib.suppress(libvirt.libvirtError):
                pod.conn.close()
            pod.conn = None
        pod.daemon.stop()
        for server in pod.dhcp_servers:
            server.stop()
        kill_namespace_processes([pod.net.netns])  # anything left (a QEMU that outlived its daemon)
        pod.net.delete()
        if pod in self.pods:
            self.pods.remove(pod)

    def net1_address(self, vm: Vm, pod: Pod | None = None) -> str:
        """The address ``vm`` has on net1 in ``pod`` (default: where it runs): the one the
        network's server keeps for it (kept), or the pod's own from the node's subnet (per-node)."""
        if self.l2 is not None:
            return self.l2.address_of(vm.name)
        return (pod or vm.pod).net.nic(self.net1.name).ip

    # --- guests -------------------------------------------------------------------------
    def start_vm(
        self,
        *,
        name: str,
        node: str,
        policy: MacPolicy = "pin",
        sidecar: bool = True,
        ping: str | None = None,
        namespace: str = "default",
        second_nic: bool = False,
        net1: bool = False,
        link_down: Sequence[str] = (),
        macvtap: bool = False,
    ) -> Vm:
        """Create the VM's first pod and boot the guest in it (returns once QEMU runs).

        ``second_nic`` adds a Multus network with macvtap binding (``secondary``, 10.245.x.0/24,
        named as KubeVirt names it); ``net1`` a bridge NIC on the lab's ``net1`` network (its IPAM
        mode is the lab's). ``ping`` may list several addresses, comma-separated. ``link_down``:
        VMI interfaces whose spec says ``state: down`` (their domain NIC starts with its link down,
        as virt-launcher defines it, facts R2). ``macvtap``: a NIC on the lab's macvtap network
        (``mvt``, the binding plugin; Lab(macvtap=True))."""
        networks: tuple[NetworkDef, ...] = NETWORKS if second_nic else (POD_NETWORK,)
        if net1:
            networks = (*networks, self.net1)
        if macvtap:
            if self.mvt is None:
                raise ValueError("this lab has no macvtap network (Lab(macvtap=True))")
            networks = (*networks, MACVTAP_NET)
        # A new VMI has no status yet: its pod's server answers the spec MAC or the pod's own.
        pod = self.create_pod(
            vm=name, node=node, spec_macs=self.spec_macs(namespace, name, policy, networks), networks=networks
        )
        console = self.run_dir / f"{namespace}_{name}.console"
        xml = domain_xml(
            name=domain_name(namespace, name),
            nics=[Nic(n.name, pod.guest_macs[n.name], n.tap) for n in networks],
            console=console,
            cmdline=self.guest.cmdline(name=name, ping=ping),
            guest=self.guest,
        )
        if net1 and self.l2 is not None:
            # The network's server keeps an address for the guest's MAC, so the lab knows it.
            self.l2.reserve(vm=name, mac=pod.guest_macs[self.net1.name])
        if macvtap and self.mvt is not None:
            self.mvt.reserve(vm=name, mac=pod.guest_macs[MACVTAP_NET.name])
        vm = Vm(
            namespace=namespace,
            name=name,
            policy=policy,
            with_sidecar=sidecar,
            ping=ping,
            console=ConsoleTail(console),
            pod=pod,
            pods=[pod],
            networks=networks,
            guest=self.guest,
            states=dict.fromkeys(link_down, "down"),
        )
        self.vms.append(vm)
        if sidecar:
            self.start_sidecar(pod, namespace=namespace, vmi=name, policy=policy)
        xml = self._launcher_hooks(pod, vm, xml)
        if vm.states:
            xml = with_link_states(xml, {n: s for n, s in vm.states.items() if s == "down"})
        # virt-launcher defines the domain, then starts it; from then on virt-handler syncs it.
        dom = pod.conn.defineXML(xml)
        dom.create()
        self._start_reconciler(pod, vm, migration_target=False)
        return vm

    def migrate(
        self,
        vm: Vm,
        *,
        to_node: str,
        timeout: float = 240.0,
        paused: bool = False,
        on_target: Callable[[Pod], None] | None = None,
        source_linger_s: float = 0.0,
    ) -> MigrationRecord:
        """Live-migrate ``vm`` into a new pod on ``to_node`` and delete the source pod.

        ``paused``: the VM is paused first and migrated as KubeVirt migrates a paused VMI
        (VIR_MIGRATE_PAUSED): it arrives paused and only resumes when the user unpauses it
        (`unpause`); ``resumed`` in the record is then the time it arrived. ``on_target`` is called
        with the target pod once it exists, before the migration starts. ``source_linger_s``: the
        source pod (its network namespace, devices, daemon) lives on that long after the migration
        before it is deleted, in the background: KubeVirt's source pod completes only once its
        containers have exited, seconds and up to about 46 s later (facts V8); 0 deletes it at once.

        KubeVirt's reconcile (lab/reconcile.py) starts in the target pod before the migration and
        syncs from the migration's end on; the source's stops syncing when the migration starts."""
        source = vm.pod
        target = self.create_target_pod(vm, node=to_node)
        if on_target is not None:
            on_target(target)
        if vm.with_sidecar:
            self.start_sidecar(target, namespace=vm.namespace, vmi=vm.name, policy=vm.policy)
            # The target launcher runs the hooks too; the domain itself arrives by migration.
            self._launcher_hooks(target, vm, vm.domain().XMLDesc(0))
        self._start_reconciler(target, vm, migration_target=True)
        self._migration_seq += 1
        sock = self.run_dir / f"migration-{self._migration_seq}.sock"
        params = {libvirt.VIR_MIGRATE_PARAM_URI: f"unix://{sock}"}
        dom = source.conn.lookupByName(vm.domain_name)
        flags = MIGRATION_FLAGS
        if paused:
            dom.suspend()
            flags |= libvirt.VIR_MIGRATE_PAUSED
        if source.reconciler is not None:
            source.reconciler.suspend()  # a migration's source is not synced (facts R13)
        started = time.time()
        try:
            dom.migrateToURI3(target.daemon.uri, params, flags)
        except libvirt.libvirtError:
            if source.reconciler is not None:
                source.reconciler.resume()
            raise
        finished = time.time()
        target_events = target.lifecycle()
        if paused:
            resumed = target_events.wait("STARTED", "MIGRATED", timeout=timeout)
        else:
            resumed = target_events.wait("RESUMED", "MIGRATED", timeout=timeout)
        stopped = source.lifecycle().wait("STOPPED", "MIGRATED", timeout=timeout)
        if target.reconciler is not None:
            target.reconciler.source_stopped(stopped.at)  # the hand-over before v1.6 (facts R7)
        record = MigrationRecord(
            vm=vm.name,
            source_pod=source.name,
            target_pod=target.name,
            started=started,
            resumed=resumed.at,
            finished=finished,
            target_events=target_events.events(),
            source_events=source.lifecycle().events(),
        )
        vm.pod = target
        vm.pods.append(target)
        # The source pod goes once its containers have exited (facts V8).
        if source_linger_s > 0:
            timer = threading.Timer(source_linger_s, self.delete_pod, args=(source,))
            timer.daemon = True
            self._lingering.append(timer)
            timer.start()
        else:
            self.delete_pod(source)
        return record

    def unpause(self, vm: Vm) -> float:
        """The user unpauses the VM (virtctl unpause: virDomainResume in its pod); returns when."""
        at = time.time()
        vm.domain().resume()
        return at

    # --- teardown -----------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        stop_echo_streams()  # a failed scenario's probes, before the namespaces they ping from go
        for timer in self._lingering:
            timer.cancel()
            timer.join(timeout=60)  # one already deleting its pod finishes first
        for vm in self.vms:
            vm.console.stop()
        if self.l2 is not None:
            self.l2.close()
        if self.mvt is not None:
            self.mvt.close()
        for pod in list(self.pods):
            try:
                self.delete_pod(pod)
            except Exception:  # keep tearing down the rest
                log.exception("deleting pod %s", pod.name)
        cleanup(self.id, keep_files=self.keep_files)
