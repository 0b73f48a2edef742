"""The migration scenarios, end to end, returning what happened as data.

One function, :func:`run_scenario`, used by the scenario tests, ``python -m lab demo`` and
the benchmark: build a two-node lab, boot a server guest and a client guest that pings it,
live-migrate the client (once, or there and back), then watch for the guest's DHCP ack and
its first ping reply in the new pod, and collect the timeline of every migration.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

from bridge_migration_contract import FixerDelivery, MacPolicy, NicRefresh
from lab.cluster import Lab, MigrationRecord, Pod, Vm
from lab.console import GuestEvent
from lab.dhcp import DEFAULT_KUBEVIRT_VERSION
from lab.guests import DEFAULT_GUEST, GuestType
from lab.l2 import IpamMode
from lab.manual import lab_link_refresh
from lab.stuntime import StunProbe
from lab.timeline import Timeline

ScenarioKind = Literal[
    "same-mac",
    "mac-change",
    "control",
    "round-trip",
    "two-nics",
    "lab-link-refresh",
    "net1-kept",
    "net1-per-node",
    "net1-kept-control",
    "net1-per-node-control",
]
SCENARIOS: Final[tuple[ScenarioKind, ...]] = get_args(ScenarioKind)


@dataclass(frozen=True)
class ScenarioSpec:
    policy: MacPolicy
    sidecar: bool
    hops: tuple[str, ...]  # nodes the client migrates to, in order (it starts on "a")
    recovers: bool  # whether the guest is expected to regain connectivity
    about: str
    second_nic: bool = False
    # The KubeVirt version the lab plays: its DHCP server's MAC rule differs before v1.9.
    kubevirt_version: str = DEFAULT_KUBEVIRT_VERSION
    # What the VMs boot (lab/guests.py): the busybox fast lane or Debian 12 with systemd-networkd.
    guest: GuestType = DEFAULT_GUEST
    # Both VMs get a bridge NIC on the Multus network net1 in this IPAM mode (lab.l2), and the
    # client pings the server over it too (the seed's functional test on that network).
    net1: IpamMode | None = None


SPECS: Final[dict[ScenarioKind, ScenarioSpec]] = {
    "same-mac": ScenarioSpec("pin", True, ("b",), True, "pinned MAC: the sidecar refreshes the link"),
    "mac-change": ScenarioSpec(
        "follow-pod",
        True,
        ("b",),
        True,
        "KubeVirt v1.8 serves the target pod's MAC: the sidecar reattaches the NIC",
        kubevirt_version="v1.8.0",
    ),
    "control": ScenarioSpec("pin", False, ("b",), False, "no sidecar: the guest keeps its stale address"),
    "round-trip": ScenarioSpec("pin", True, ("b", "a"), True, "A -> B -> A with the sidecar"),
    "two-nics": ScenarioSpec(
        "pin",
        True,
        ("b",),
        True,
        "two NICs (pod network + Multus): both refreshed",
        second_nic=True,
    ),
    "lab-link-refresh": ScenarioSpec(
        "pin", False, ("b",), True, "lab self-test: a hand-made link refresh (not the product)"
    ),
    "net1-kept": ScenarioSpec(
        "pin", True, ("b",), True, "bridge on Multus net1, one L2 across the nodes and its own DHCP", net1="kept"
    ),
    "net1-per-node": ScenarioSpec(
        "pin", True, ("b",), True, "bridge on Multus net1, a subnet per node (flannel-like IPAM)", net1="per-node"
    ),
    "net1-kept-control": ScenarioSpec(
        "pin", False, ("b",), False, "net1 kept, no sidecar: what users see today", net1="kept"
    ),
    "net1-per-node-control": ScenarioSpec(
        "pin", False, ("b",), False, "net1 per node, no sidecar: what users see today", net1="per-node"
    ),
}


@dataclass
class MigrationOutcome:
    """One hop: the migration, the target pod, what the guest and the sidecar did."""

    record: MigrationRecord
    target_pod: str
    target_node: str
    target_ip: str
    target_cni_mac: str
    target_guest_mac: str  # what the target pod's DHCP server serves
    dhcp_ack: GuestEvent | None
    first_reply: GuestEvent | None
    fixups: list[dict[str, Any]]
    timeline: Timeline
    # Every guest NIC (eth0, eth1, ...; ens3, ... in the Debian guest): its lease in the target
    # pod and first reply after it.
    nic_acks: dict[str, GuestEvent | None] = field(default_factory=dict)
    nic_replies: dict[str, GuestEvent | None] = field(default_factory=dict)
    target_ips: dict[str, str] = field(default_factory=dict)  # guest NIC -> target pod IP
    sidecar_status: dict[str, Any] | None = None  # the target sidecar's GET /v1/status afterwards
    # Stun time (lab.stuntime): ms from the last echo reply at the source pod's address to the
    # first at the target pod's, echoes every 10 ms from the server's node; None: never answered.
    stun_ms: int | None = None
    # The same on net1 (scenarios with net1): from the network's side (the switch namespace, or
    # the server's node), to the guest's net1 address in the source pod and in the target pod.
    net1_stun_ms: int | None = None
    net1_ip: str | None = None  # the guest's net1 address in the target pod
    # net1 kept: the switch port that has learned the guest's net1 MAC once the hop is over.
    net1_switch_port: str | None = None
    source_sidecar_exit: int | None = None  # the source pod's sidecar exit code after Shutdown
    guest_events: list[GuestEvent] = field(default_factory=list)  # the console from the migration on

    @property
    def gap_seconds(self) -> float | None:
        """Connectivity gap: the guest resuming in the target pod (RESUMED/MIGRATED, the end
        of the migration as the guest sees it) to its first ping reply from there."""
        return None if self.first_reply is None else self.first_reply.at - self.record.resumed

    @property
    def gap_after_api_return(self) -> float | None:
        """First ping reply relative to migrateToURI3 returning (negative: recovered before)."""
        return None if self.first_reply is None else self.first_reply.at - self.record.finished


@dataclass
class ScenarioResult:
    kind: ScenarioKind
    spec: ScenarioSpec
    server_ip: str
    first_ip: str
    first_mac: str
    ping_before: bool
    migrations: list[MigrationOutcome] = field(default_factory=list)
    final_guest_address: str | None = None  # "ip/prefix" from the guest's last DHCP ack
    final_domain_mac: str | None = None
    final_addresses: dict[str, str | None] = field(default_factory=dict)  # guest NIC -> "ip/prefix"
    final_domain_macs: dict[str, str | None] = field(default_factory=dict)  # VMI interface -> MAC
    first_macs: dict[str, str] = field(default_factory=dict)  # guest NIC -> MAC of its first lease
    first_addresses: dict[str, str] = field(default_factory=dict)  # guest NIC -> "ip/prefix" of it

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary for the benchmark: gaps, addresses and every timeline mark."""
        return {
            "scenario": self.kind,
            "policy": self.spec.policy,
            "kubevirt_version": self.spec.kubevirt_version,
            "guest": self.spec.guest,
            "sidecar": self.spec.sidecar,
            "net1": self.spec.net1,
            "ping_before": self.ping_before,
            "first_ip": self.first_ip,
            "first_mac": self.first_mac,
            "final_guest_address": self.final_guest_address,
            "final_domain_mac": self.final_domain_mac,
            "migrations": [
                {
                    "target_pod": m.target_pod,
                    "target_node": m.target_node,
                    "target_ip": m.target_ip,
                    "migration_s": round(m.record.finished - m.record.started, 3),
                    "resume_s": round(m.record.resumed - m.record.started, 3),
                    "gap_s": None if m.gap_seconds is None else round(m.gap_seconds, 3),
                    "stun_ms": m.stun_ms,
                    "net1_stun_ms": m.net1_stun_ms,
                    "net1_switch_port": m.net1_switch_port,
                    "net1_recovered": any(
                        m.nic_replies.get(nic) is not None for nic, ip in m.target_ips.items() if ip == m.net1_ip
                    )
                    if m.net1_ip
                    else None,
                    "recovered": m.first_reply is not None,
                    "fixup_actions": [i.get("action") for f in m.fixups for i in f.get("interfaces", [])],
                    "timeline": m.timeline.as_dicts(),
                }
                for m in self.migrations
            ],
        }

    def record_final_state(self, client: Vm, guest_nics: dict[str, str]) -> None:
        """The client's addresses and domain MACs once every hop is done."""
        self.final_guest_address = client.guest_address()
        self.final_domain_mac = client.domain_mac()
        self.final_addresses = {nic: client.guest_address(nic) for nic in guest_nics}
        self.final_domain_macs = {net: client.domain_mac(net) for net in guest_nics.values()}

    def timelines(self) -> str:
        return "\n\n".join(
            m.timeline.table(f"migration {i + 1}: {m.record.source_pod} -> {m.target_pod} ({m.target_node})")
            for i, m in enumerate(self.migrations)
        )


Say = Callable[[str], None]


def _quiet(_msg: str) -> None:
    return None


def _timeline(
    *, vm: Vm, record: MigrationRecord, fixups: list[dict[str, Any]], first_reply: GuestEvent | None
) -> Timeline:
    tl = Timeline(origin=record.started)
    tl.add("migration start", record.started, f"{record.source_pod} -> {record.target_pod}")
    for event in record.source_events:
        if event.detail == "MIGRATED" and event.at >= record.started:
            tl.add(f"source {event}", event.at)
    for event in record.target_events:
        if event.at >= record.started and event.event in ("STARTED", "RESUMED"):
            tl.add(f"target {event}", event.at)
    tl.add("migration end", record.finished, "migrateToURI3 returned")
    for fixup in fixups:
        actions = ",".join(f"{i.get('name')}:{i.get('action')}" for i in fixup.get("interfaces", []))
        tl.add("sidecar fixup started", fixup.get("started"), str(fixup.get("trigger", "")))
        tl.add("sidecar fixup done", fixup.get("finished"), f"{fixup.get('result')} {actions}")
    since = record.started
    for kind in ("carrier-up", "nic-up", "addr-add", "dhcp-ack"):
        guest_event = vm.console.first(kind, since=since)
        if guest_event is not None:
            tl.add(f"guest {kind}", guest_event.at, " ".join(guest_event.args))
    if first_reply is not None:
        tl.add("first ping reply after migration", first_reply.at, " ".join(first_reply.args))
    return tl


def _diagnose(*, vm: Vm, since: float, say: Say) -> None:
    """What the guest and the sidecar said since ``since``: printed when a wait times out."""
    say("---- diagnostics: guest console since the migration started")
    for event in vm.console.events(since=since)[-40:]:
        say(f"  +{event.at - since:6.2f} s  {event.kind} {' '.join(event.args)}")
    sidecar = vm.pod.sidecar
    if sidecar is not None:
        try:
            say(f"---- sidecar fixups: {sidecar.fixups()}")
        except Exception as exc:  # diagnostics must not hide the original failure
            say(f"---- sidecar fixups unavailable: {exc}")
        say(f"---- sidecar log tail:\n{sidecar.process.log_tail(30)}")


def _lease_of(ip: str) -> Callable[[GuestEvent], bool]:
    def match(event: GuestEvent) -> bool:
        return event.fields.get("ip", "").split("/")[0] == ip

    return match


Events = dict[str, GuestEvent | None]


def addressed(vm: Vm, ack: GuestEvent, *, since: float) -> GuestEvent:
    """The console line from which the guest had the address of ``ack``: the busybox guest's
    udhcpc script reports the ack once it set the address; the Debian guest's observer reports
    the address the moment networkd sets it (``addr-add``) and the ack with the server and router
    only when networkd has written its lease file, up to a second or more later."""
    ip = ack.fields.get("ip", "").split("/")[0]
    earlier = vm.console.events(
        "addr-add", since=since, nic=ack.nic, where=lambda e: _lease_of(ip)(e) and e.precedes(ack)
    )
    return earlier[-1] if earlier else ack


def _to(target: str | None) -> Callable[[GuestEvent], bool]:
    """Ping replies from ``target`` only (any when None)."""
    return lambda e: target is None or e.args[1:2] == (target,)


def _watch_recovery(
    *,
    vm: Vm,
    record: MigrationRecord,
    target_ips: dict[str, str],
    timeout: float,
    say: Say,
    phase: Say,
    ping_targets: dict[str, str] | None = None,
) -> tuple[Events, Events]:
    """Wait, per guest NIC, for a lease of the target pod's IP, then a ping reply after the
    guest had the address (see :func:`addressed`); ``ping_targets`` (guest NIC -> address) says
    whose replies count on a NIC, where the guest pings more than one address."""
    acks: Events = {}
    replies: Events = {}
    try:
        for nic, ip in target_ips.items():
            ack = vm.console.wait("dhcp-ack", nic=nic, since=record.started, where=_lease_of(ip), timeout=timeout)
            acks[nic] = ack
            phase(f"client {nic} renewed its lease: {ack.fields.get('ip')} mac {ack.fields.get('mac')}")
        for nic in target_ips:
            lease = acks[nic]
            assert lease is not None
            since = addressed(vm, lease, since=record.started)
            target = _to((ping_targets or {}).get(nic))
            reply = vm.console.wait(
                "ping-reply",
                nic=nic,
                since=since.at,
                where=lambda e, s=since, t=target: s.precedes(e) and t(e),  # type: ignore[misc]
                timeout=timeout,
            )
            replies[nic] = reply
            phase(f"client pings server again from {nic}: {reply.at - record.resumed:.1f} s after the guest resumed")
    except TimeoutError:
        _diagnose(vm=vm, since=record.started, say=say)
        raise
    return acks, replies


def _watch_no_recovery(
    *,
    vm: Vm,
    record: MigrationRecord,
    nics: list[str],
    observe: float,
    phase: Say,
    ping_targets: dict[str, str] | None = None,
) -> tuple[Events, Events]:
    """Watch for ``observe`` seconds; report any lease or reply seen after the migration.

    Replies are counted from 1 s after migrateToURI3 returned, so a line written before the
    guest paused but read late cannot count."""
    phase(f"watching the client for {observe:.0f} s")
    time.sleep(observe)
    acks: Events = {nic: vm.console.first("dhcp-ack", nic=nic, since=record.started) for nic in nics}
    replies: Events = {
        nic: vm.console.first(
            "ping-reply", nic=nic, since=record.finished + 1.0, where=_to((ping_targets or {}).get(nic))
        )
        for nic in nics
    }
    phase(
        f"after {observe:.0f} s: dhcp ack {'seen' if any(acks.values()) else 'none'},"
        f" ping replies {'seen' if any(replies.values()) else 'none'}"
    )
    return acks, replies


def _migrate_probed(
    lab: Lab, vm: Vm, *, to_node: str, timeout: float, probe_ns: str, net1_probe_ns: str | None = None
) -> tuple[MigrationRecord, StunProbe, StunProbe | None]:
    """Migrate with the stun-time probe running on both pod addresses (and on net1's, if any)."""
    probe = StunProbe(probe_ns, vm.pod.ip)
    net1_probe = (
        StunProbe(net1_probe_ns, lab.net1_address(vm), lambda pod: lab.net1_address(vm, pod))
        if net1_probe_ns is not None
        else None
    )

    def on_target(pod: Pod) -> None:
        probe.target(pod)
        if net1_probe is not None:
            net1_probe.target(pod)

    try:
        return lab.migrate(vm, to_node=to_node, timeout=timeout, on_target=on_target), probe, net1_probe
    except BaseException:
        probe.finish(expect_reply=False)
        if net1_probe is not None:
            net1_probe.finish(expect_reply=False)
        raise


def _switch_port(lab: Lab, vm: Vm) -> str | None:
    """Where net1's switch has learned ``vm``'s net1 MAC (kept mode only)."""
    if lab.l2 is None:
        return None
    mac = vm.domain_mac(lab.net1.name)
    return lab.l2.fdb_port(mac) if mac else None


def _finish_probes(
    probe: StunProbe,
    net1_probe: StunProbe | None,
    *,
    replies: Events,
    primary: str,
    net1_nic: str | None,
    phase: Say,
    where: str,
    net1_where: str,
) -> tuple[int | None, int | None]:
    """Stop the stun probes of one hop; (pod network, net1) stun times in ms, None: never back."""
    stun = probe.finish(expect_reply=replies.get(primary) is not None)
    phase(f"stun time (10 ms echoes from {where}): {'never' if stun is None else stun} ms")
    if net1_probe is None or net1_nic is None:
        return stun, None
    net1_stun = net1_probe.finish(expect_reply=replies.get(net1_nic) is not None)
    phase(f"net1 stun time (10 ms echoes from {net1_where}): {'never' if net1_stun is None else net1_stun} ms")
    return stun, net1_stun


def _start_vms(lab: Lab, spec: ScenarioSpec) -> tuple[Vm, Vm, dict[str, str]]:
    """The server and the client that pings it, both on node a; and whose replies count on
    each client NIC: the server's pod address, or its net1 address on net1."""
    with_net1 = spec.net1 is not None
    server = lab.start_vm(name="server", node="a", policy="pin", sidecar=False, net1=with_net1)
    server_net1 = lab.net1_address(server) if with_net1 else None
    client = lab.start_vm(
        name="client",
        node="a",
        policy=spec.policy,
        sidecar=spec.sidecar,
        ping=server.pod.ip if server_net1 is None else f"{server.pod.ip},{server_net1}",
        second_nic=spec.second_nic,
        net1=with_net1,
    )
    targets = {
        nic: server_net1 if net == "net1" and server_net1 else server.pod.ip for nic, net in client.guest_nics().items()
    }
    return server, client, targets


def run_scenario(
    kind: ScenarioKind,
    *,
    say: Say = _quiet,
    timeout: float = 240.0,
    observe: float = 45.0,
    link_pause_ms: int = 100,
    policy: MacPolicy | None = None,
    kubevirt_version: str | None = None,
    guest: GuestType | None = None,
    nic_refresh: NicRefresh | None = None,
    delivery: FixerDelivery = "hook",
) -> ScenarioResult:
    """Run one scenario in a fresh lab (torn down on return) and report what happened.

    ``timeout`` bounds every wait for something expected; ``observe`` is how long a scenario
    that must NOT recover (control) is watched after the migration; ``link_pause_ms`` is the
    sidecar's pause between link down and up; ``nic_refresh`` sets the VMI's nic-refresh
    annotation. ``policy``, ``kubevirt_version`` and ``guest`` (the guest type) override the
    scenario's own. ``delivery`` inject runs the client's fixer as the webhook's injected container
    (no hook server, no hook calls; it exits on its own once the VM left a pod).
    """
    spec = SPECS[kind]
    spec = dataclasses.replace(
        spec,
        policy=policy or spec.policy,
        kubevirt_version=kubevirt_version or spec.kubevirt_version,
        guest=guest or spec.guest,
    )
    t0 = time.time()

    def phase(msg: str) -> None:
        say(f"[{time.time() - t0:7.1f} s] {msg}")

    with Lab(
        link_pause_ms=link_pause_ms,
        kubevirt_version=spec.kubevirt_version,
        guest=spec.guest,
        nic_refresh=nic_refresh,
        net1=spec.net1,
        sidecar_delivery=delivery,
    ) as lab:
        phase(
            f"scenario {kind}: {spec.about} (policy {spec.policy}, KubeVirt {spec.kubevirt_version},"
            f" guest {spec.guest})"
        )
        lab.add_nodes("a", "b")
        phase("nodes a (10.244.1.0/24) and b (10.244.2.0/24) up")
        with_net1 = spec.net1 is not None
        server, client, ping_targets = _start_vms(lab, spec)
        server_net1 = lab.net1_address(server) if with_net1 else None
        # A reattach keeps the PCI slot, so the guest's NIC names hold across the migration.
        guest_nics = client.guest_nics()
        primary = client.guest_nic()
        if with_net1:
            phase(f"net1 ({spec.net1}): server {server_net1}, client {lab.net1_address(client)}")
        phase(
            f"guests booting: server in {server.pod.name} ({server.pod.ip}),"
            f" client in {client.pod.name} ({client.pod.ip}), sidecar={'yes' if spec.sidecar else 'no'}"
        )
        leases = {nic: client.console.wait("dhcp-ack", nic=nic, timeout=timeout) for nic in guest_nics}
        for nic, lease in leases.items():
            phase(f"client {nic} got its lease: {lease.fields.get('ip')} mac {lease.fields.get('mac')}")
        first_ack = client.console.wait("dhcp-ack", nic=primary, timeout=timeout)
        for nic in guest_nics:
            client.console.wait("ping-reply", nic=nic, where=_to(ping_targets[nic]), timeout=timeout)
            phase(f"client pings server {ping_targets[nic]} from {nic}: ok")
        result = ScenarioResult(
            kind=kind,
            spec=spec,
            server_ip=server.pod.ip,
            first_ip=client.pod.ip,
            first_mac=first_ack.fields.get("mac", ""),
            ping_before=True,
            first_macs={nic: lease.fields.get("mac", "") for nic, lease in leases.items()},
            first_addresses={nic: lease.fields.get("ip", "") for nic, lease in leases.items()},
        )
        probe_ns = lab.nodes[server.pod.node].netns
        # net1's probe runs where the network is: its switch (kept), or the server's node.
        net1_probe_ns = (lab.l2.switch_netns if lab.l2 is not None else probe_ns) if with_net1 else None
        for hop in spec.hops:
            phase(f"migrating client {client.pod.node} -> {hop} (LIVE|PEER2PEER|PERSIST_DEST)")
            record, probe, net1_probe = _migrate_probed(
                lab, client, to_node=hop, timeout=timeout, probe_ns=probe_ns, net1_probe_ns=net1_probe_ns
            )
            target = client.pod
            phase(
                f"migration done: guest resumed on {hop} after {record.resumed - record.started:.1f} s,"
                f" migrateToURI3 returned after {record.finished - record.started:.1f} s;"
                f" target pod {target.name} ip {target.ip}, source pod deleted"
            )
            if kind == "lab-link-refresh":
                lab_link_refresh(client.domain())
                phase("LAB TOOL: link refreshed by hand (no sidecar)")
            target_ips = {
                nic: lab.net1_address(client, target) if net == "net1" else target.net.nic(net).ip
                for nic, net in guest_nics.items()
            }
            if spec.recovers:
                acks, replies = _watch_recovery(
                    vm=client,
                    record=record,
                    target_ips=target_ips,
                    timeout=timeout,
                    say=say,
                    phase=phase,
                    ping_targets=ping_targets,
                )
            else:
                acks, replies = _watch_no_recovery(
                    vm=client,
                    record=record,
                    nics=list(target_ips),
                    observe=observe,
                    phase=phase,
                    ping_targets=ping_targets,
                )
            net1_nic = next((nic for nic, net in guest_nics.items() if net == "net1"), None)
            stun, net1_stun = _finish_probes(
                probe,
                net1_probe,
                replies=replies,
                primary=primary,
                net1_nic=net1_nic,
                phase=phase,
                where=f"node {server.pod.node}",
                net1_where=net1_probe_ns or "",
            )
            ack, reply = acks[primary], replies[primary]
            fixups = target.sidecar.fixups() if target.sidecar is not None else []
            status = target.sidecar.status() if target.sidecar is not None else None
            outcome = MigrationOutcome(
                record=record,
                target_pod=target.name,
                target_node=target.node,
                target_ip=target.ip,
                target_cni_mac=target.cni_mac,
                target_guest_mac=target.guest_mac,
                dhcp_ack=ack,
                first_reply=reply,
                fixups=fixups,
                timeline=_timeline(vm=client, record=record, fixups=fixups, first_reply=reply),
                nic_acks=acks,
                nic_replies=replies,
                target_ips=target_ips,
                sidecar_status=status,
                source_sidecar_exit=client.pods[-2].sidecar_exit,
                stun_ms=stun,
                net1_stun_ms=net1_stun,
                net1_ip=target_ips.get(net1_nic) if net1_nic else None,
                net1_switch_port=_switch_port(lab, client),
                guest_events=client.console.events(since=record.started),
            )
            result.migrations.append(outcome)
        result.record_final_state(client, guest_nics)
        phase(f"client ends with {result.final_guest_address} mac {result.final_domain_mac}; tearing down")
    phase("lab torn down")
    return result
