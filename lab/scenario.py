"""The migration scenarios, end to end, returning what happened as data.

:func:`run_scenario`, used by the scenario tests, ``python -m lab demo`` and the benchmarks:
build a two-node lab, boot a server guest and a client guest that pings it, live-migrate the
client (once, or there and back), then watch for the guest's DHCP ack and its first ping reply
in the new pod, and collect the timeline of every migration.

A scenario is a list of named steps (:class:`Steps`) over one :class:`Run`, and
:func:`run_steps` is the one runner: node mode (``lab.node_agent.run_node_mode``) is the same
runner with steps of its own (a node agent instead of sidecars, the lab playing virt-handler)
beside the shared ones here (``boot_nodes``, ``start_guests``, ``await_first_pings``,
``migrate``, ``await_recovery``).

KubeVirt's reconcile stand-in (lab/reconcile.py) runs in every scenario by default
(``run_scenario(..., reconcile=...)``); its syncs after each migration are in the outcome and
marked ``kubevirt sync`` on the timeline.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Literal, TypeVar, get_args

from bridge_migration_contract import FixerDelivery, MacPolicy, NicRefresh
from lab.cluster import Lab, MigrationRecord, Pod, Vm
from lab.console import GuestEvent
from lab.dhcp import DEFAULT_KUBEVIRT_VERSION
from lab.guests import DEFAULT_GUEST, GuestType
from lab.l2 import IpamMode
from lab.manual import lab_link_refresh
from lab.reconcile import ReconcileMode, ReconcileTiming, Sync
from lab.sidecar import DEFAULT_LINK_PAUSE_MS
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
    # KubeVirt's syncs in the target pod (lab/reconcile.py) up to the end of the hop; empty: off.
    kubevirt_syncs: list[Sync] = field(default_factory=list)
    # When the target stamped the migration's end as KubeVirt's launcher would (facts R12); None:
    # reconcile off, worst mode, or not yet.
    kubevirt_end: float | None = None

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
    reconcile: str = "kubevirt"  # the mode of KubeVirt's reconcile stand-in (lab/reconcile.py)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary for the benchmark: gaps, addresses and every timeline mark."""
        return {
            "scenario": self.kind,
            "policy": self.spec.policy,
            "kubevirt_version": self.spec.kubevirt_version,
            "guest": self.spec.guest,
            "sidecar": self.spec.sidecar,
            "net1": self.spec.net1,
            "reconcile": self.reconcile,
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
                    "kubevirt_end_s": None if m.kubevirt_end is None else round(m.kubevirt_end - m.record.started, 3),
                    "kubevirt_syncs": [
                        {
                            "t_s": round(sync.at - m.record.started, 3),
                            "reason": sync.reason,
                            "changes": [str(c) for c in sync.changes],
                            "error": sync.error,
                        }
                        for sync in m.kubevirt_syncs
                    ],
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
Events = dict[str, GuestEvent | None]


def _quiet(_msg: str) -> None:
    return None


# --- the run: what the steps of one scenario share ---------------------------------------------


@dataclass(eq=False, repr=False)
class Run:
    """One scenario run as it goes: its lab and settings, and what its steps found so far.

    A step takes the run, does one thing and fills the fields its docstring names; a field
    without a default is unset until the step that fills it has run."""

    kind: str
    spec: ScenarioSpec
    lab: Lab
    say: Say = _quiet
    timeout: float = 240.0  # bounds every wait for something expected
    paused: bool = False  # migrate the client paused, as KubeVirt migrates a paused VMI
    t0: float = field(default_factory=time.time)
    # Called with each target pod once it exists, before its migration starts.
    on_target: list[Callable[[Pod], None]] = field(default_factory=list)
    # start_guests
    server: Vm = field(init=False)
    client: Vm = field(init=False)
    ping_targets: dict[str, str] = field(init=False)  # guest NIC -> the address whose replies count there
    # guest NIC -> VMI network: a reattach keeps the PCI slot, so the names hold across migrations.
    guest_nics: dict[str, str] = field(init=False)
    primary: str = field(init=False)  # the guest NIC on the pod network
    # await_first_pings
    leases: dict[str, GuestEvent] = field(init=False)  # guest NIC -> its first lease
    # each hop: migrate, then await_recovery or observe_no_recovery
    hop: str = field(init=False)  # the node the client migrates to in this hop
    record: MigrationRecord = field(init=False)
    target_ips: dict[str, str] = field(init=False)  # guest NIC -> its address in the target pod
    acks: Events = field(init=False)  # guest NIC -> its lease in the target pod
    replies: Events = field(init=False)  # guest NIC -> its first ping reply after that lease

    def phase(self, msg: str) -> None:
        self.say(f"[{time.time() - self.t0:7.1f} s] {msg}")

    def diagnose(self) -> None:
        """Said when a wait after a migration timed out."""
        _diagnose(vm=self.client, since=self.record.started, say=self.say)

    def fire_on_target(self, pod: Pod) -> None:
        for call in self.on_target:
            call(pod)


RunT = TypeVar("RunT", bound=Run)
Step = Callable[[RunT], None]


@dataclass(frozen=True)
class Steps(Generic[RunT]):
    """A scenario as named steps: once before the migrations, once per hop, once after."""

    setup: tuple[Step[RunT], ...]
    hop: tuple[Step[RunT], ...]
    finish: tuple[Step[RunT], ...] = ()


def run_steps(run: RunT, steps: Steps[RunT]) -> RunT:
    """The one scenario runner, behind :func:`run_scenario` and ``lab.node_agent.run_node_mode``:
    enter the run's lab, do the setup steps, the hop steps for each node of ``run.spec.hops`` (the
    client starts on node a), the finish steps, and tear the lab down, pass or fail."""
    with run.lab:
        for step in steps.setup:
            step(run)
        for hop in run.spec.hops:
            run.hop = hop
            for step in steps.hop:
                step(run)
        for step in steps.finish:
            step(run)
    run.phase("lab torn down")
    return run


# --- helpers of the steps ----------------------------------------------------------------------


def _timeline(
    *,
    vm: Vm,
    record: MigrationRecord,
    fixups: list[dict[str, Any]],
    first_reply: GuestEvent | None,
    syncs: list[Sync] | None = None,
    kubevirt_end: float | None = None,
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
    tl.add("kubevirt migration end", kubevirt_end, "the end stamp, or the hand-over (facts R12)")
    for sync in syncs or []:
        if sync.at >= record.started:
            tl.add("kubevirt sync", sync.at, sync.describe())
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


def _await_lease(run: Run, nic: str, ip: str) -> GuestEvent:
    console = run.client.console
    ack = console.wait("dhcp-ack", nic=nic, since=run.record.started, where=_lease_of(ip), timeout=run.timeout)
    run.phase(f"client {nic} renewed its lease: {ack.fields.get('ip')} mac {ack.fields.get('mac')}")
    return ack


def _await_reply(run: Run, nic: str) -> GuestEvent:
    """A ping reply on ``nic`` after the guest had its new address (see :func:`addressed`)."""
    lease = run.acks[nic]
    assert lease is not None
    since = addressed(run.client, lease, since=run.record.started)
    target = _to(run.ping_targets.get(nic))
    reply = run.client.console.wait(
        "ping-reply", nic=nic, since=since.at, where=lambda e: since.precedes(e) and target(e), timeout=run.timeout
    )
    run.phase(f"client pings server again from {nic}: {reply.at - run.record.resumed:.1f} s after the guest resumed")
    return reply


# --- steps every scenario runs -----------------------------------------------------------------


def boot_nodes(run: Run) -> None:
    """Say what the scenario is, and bring up nodes a and b."""
    spec = run.spec
    run.phase(
        f"scenario {run.kind}: {spec.about} (policy {spec.policy}, KubeVirt {spec.kubevirt_version},"
        f" guest {spec.guest})"
    )
    run.lab.add_nodes("a", "b")
    run.phase("nodes a (10.244.1.0/24) and b (10.244.2.0/24) up")


def start_guests(run: Run) -> None:
    """Boot the server and the client that pings it on node a (sets server, client,
    ping_targets, guest_nics, primary)."""
    lab, spec = run.lab, run.spec
    run.server, run.client, run.ping_targets = _start_vms(lab, spec)
    run.guest_nics = run.client.guest_nics()
    run.primary = run.client.guest_nic()
    if spec.net1 is not None:
        run.phase(f"net1 ({spec.net1}): server {lab.net1_address(run.server)}, client {lab.net1_address(run.client)}")
    run.phase(
        f"guests booting: server in {run.server.pod.name} ({run.server.pod.ip}),"
        f" client in {run.client.pod.name} ({run.client.pod.ip}), sidecar={'yes' if spec.sidecar else 'no'}"
    )


def await_first_pings(run: Run) -> None:
    """Wait for the client's first lease on every NIC, then a ping reply on each (sets leases)."""
    console = run.client.console
    run.leases = {nic: console.wait("dhcp-ack", nic=nic, timeout=run.timeout) for nic in run.guest_nics}
    for nic, lease in run.leases.items():
        run.phase(f"client {nic} got its lease: {lease.fields.get('ip')} mac {lease.fields.get('mac')}")
    for nic in run.guest_nics:
        console.wait("ping-reply", nic=nic, where=_to(run.ping_targets[nic]), timeout=run.timeout)
        run.phase(f"client pings server {run.ping_targets[nic]} from {nic}: ok")


def migrate(run: Run) -> None:
    """Live-migrate the client into a new pod on this hop's node, KubeVirt's way; the source pod
    is deleted (sets record, target_ips)."""
    lab, client = run.lab, run.client
    run.phase(f"migrating client {client.pod.node} -> {run.hop} (LIVE|PEER2PEER|PERSIST_DEST)")
    record = lab.migrate(client, to_node=run.hop, timeout=run.timeout, paused=run.paused, on_target=run.fire_on_target)
    target = client.pod
    run.phase(
        f"migration done: guest resumed on {run.hop} after {record.resumed - record.started:.1f} s,"
        f" migrateToURI3 returned after {record.finished - record.started:.1f} s;"
        f" target pod {target.name} ip {target.ip}, source pod deleted"
    )
    run.record = record
    run.target_ips = {
        nic: lab.net1_address(client, target) if net == "net1" else target.net.nic(net).ip
        for nic, net in run.guest_nics.items()
    }


def await_recovery(run: Run) -> None:
    """Wait, per guest NIC, for a lease of its address in the target pod, then for a ping reply
    after the guest had that address (sets acks, replies); on a timeout, say what happened."""
    try:
        run.acks = {nic: _await_lease(run, nic, ip) for nic, ip in run.target_ips.items()}
        run.replies = {nic: _await_reply(run, nic) for nic in run.target_ips}
    except TimeoutError:
        run.diagnose()
        raise


# --- the scenarios of SPECS: stun-time probes, sidecar fixups, a result per hop ------------------


@dataclass(eq=False, repr=False)
class ScenarioRun(Run):
    kind: ScenarioKind
    observe: float = 45.0  # how long a scenario that must NOT recover is watched after a hop
    result: ScenarioResult = field(init=False)  # open_result
    # migrate_probed: the stun probes on the pod network and (scenarios with net1) on net1
    probes: tuple[StunProbe, StunProbe | None] = field(init=False)
    stun_ms: tuple[int | None, int | None] = field(init=False)  # finish_stun_probes

    @property
    def net1_nic(self) -> str | None:
        return next((nic for nic, net in self.guest_nics.items() if net == "net1"), None)

    @property
    def net1_probe_ns(self) -> str | None:
        """Where net1's probe runs: its switch (kept), or the server's node; None: no net1."""
        if self.spec.net1 is None:
            return None
        return self.lab.l2.switch_netns if self.lab.l2 is not None else self.lab.nodes[self.server.pod.node].netns


def open_result(run: ScenarioRun) -> None:
    """The result, with what the client had before any migration (sets result)."""
    first = run.leases[run.primary]
    run.result = ScenarioResult(
        kind=run.kind,
        spec=run.spec,
        server_ip=run.server.pod.ip,
        first_ip=run.client.pod.ip,
        first_mac=first.fields.get("mac", ""),
        ping_before=True,
        first_macs={nic: lease.fields.get("mac", "") for nic, lease in run.leases.items()},
        first_addresses={nic: lease.fields.get("ip", "") for nic, lease in run.leases.items()},
        reconcile=run.lab.reconcile.mode,
    )


def migrate_probed(run: ScenarioRun) -> None:
    """:func:`migrate` with the stun-time probes running: on the client's pod addresses from the
    server's node, and on its net1 addresses from ``net1_probe_ns`` (sets probes)."""
    lab, client = run.lab, run.client
    probe = StunProbe(lab.nodes[run.server.pod.node].netns, client.pod.ip)
    net1_ns = run.net1_probe_ns
    net1_probe = (
        StunProbe(net1_ns, lab.net1_address(client), lambda pod: lab.net1_address(client, pod))
        if net1_ns is not None
        else None
    )
    run.probes = (probe, net1_probe)
    run.on_target = [p.target for p in run.probes if p is not None]
    try:
        migrate(run)
    except BaseException:
        for p in run.probes:
            if p is not None:
                p.finish(expect_reply=False)
        raise


def refresh_link_by_hand(run: ScenarioRun) -> None:
    """The lab's own link refresh in place of the sidecar's (lab-link-refresh)."""
    lab_link_refresh(run.client.domain())
    run.phase("LAB TOOL: link refreshed by hand (no sidecar)")


def observe_no_recovery(run: ScenarioRun) -> None:
    """Watch the client for ``observe`` seconds; record any lease or reply seen after the
    migration (sets acks, replies). Replies count from 1 s after migrateToURI3 returned, so a
    line written before the guest paused but read late cannot count."""
    run.phase(f"watching the client for {run.observe:.0f} s")
    time.sleep(run.observe)
    console, record = run.client.console, run.record
    run.acks = {nic: console.first("dhcp-ack", nic=nic, since=record.started) for nic in run.target_ips}
    run.replies = {
        nic: console.first("ping-reply", nic=nic, since=record.finished + 1.0, where=_to(run.ping_targets.get(nic)))
        for nic in run.target_ips
    }
    run.phase(
        f"after {run.observe:.0f} s: dhcp ack {'seen' if any(run.acks.values()) else 'none'},"
        f" ping replies {'seen' if any(run.replies.values()) else 'none'}"
    )


def finish_stun_probes(run: ScenarioRun) -> None:
    """Stop the hop's stun probes (sets stun_ms: pod network, net1; None: never answered)."""
    probe, net1_probe = run.probes
    stun = probe.finish(expect_reply=run.replies.get(run.primary) is not None)
    run.phase(f"stun time (10 ms echoes from node {run.server.pod.node}): {'never' if stun is None else stun} ms")
    net1_nic, net1_stun = run.net1_nic, None
    if net1_probe is not None and net1_nic is not None:
        net1_stun = net1_probe.finish(expect_reply=run.replies.get(net1_nic) is not None)
        shown = "never" if net1_stun is None else net1_stun
        run.phase(f"net1 stun time (10 ms echoes from {run.net1_probe_ns}): {shown} ms")
    run.stun_ms = (stun, net1_stun)


def record_outcome(run: ScenarioRun) -> None:
    """What the hop did, from the migration to the target sidecar's view, into the result."""
    client, record, target = run.client, run.record, run.client.pod
    ack, reply = run.acks[run.primary], run.replies[run.primary]
    fixups = target.sidecar.fixups() if target.sidecar is not None else []
    syncs = list(target.reconciler.syncs) if target.reconciler is not None else []
    end = target.reconciler.ended_at if target.reconciler is not None else None
    net1_nic = run.net1_nic
    run.result.migrations.append(
        MigrationOutcome(
            record=record,
            target_pod=target.name,
            target_node=target.node,
            target_ip=target.ip,
            target_cni_mac=target.cni_mac,
            target_guest_mac=target.guest_mac,
            dhcp_ack=ack,
            first_reply=reply,
            fixups=fixups,
            timeline=_timeline(
                vm=client, record=record, fixups=fixups, first_reply=reply, syncs=syncs, kubevirt_end=end
            ),
            nic_acks=run.acks,
            nic_replies=run.replies,
            target_ips=run.target_ips,
            sidecar_status=target.sidecar.status() if target.sidecar is not None else None,
            source_sidecar_exit=client.pods[-2].sidecar_exit,
            stun_ms=run.stun_ms[0],
            net1_stun_ms=run.stun_ms[1],
            net1_ip=run.target_ips.get(net1_nic) if net1_nic else None,
            net1_switch_port=_switch_port(run.lab, client),
            guest_events=client.console.events(since=record.started),
            kubevirt_syncs=syncs,
            kubevirt_end=end,
        )
    )


def _switch_port(lab: Lab, vm: Vm) -> str | None:
    """Where net1's switch has learned ``vm``'s net1 MAC (kept mode only)."""
    if lab.l2 is None:
        return None
    mac = vm.domain_mac(lab.net1.name)
    return lab.l2.fdb_port(mac) if mac else None


def record_final_state(run: ScenarioRun) -> None:
    """The client's addresses and domain MACs once every hop is done, into the result."""
    run.result.record_final_state(run.client, run.guest_nics)
    run.phase(f"client ends with {run.result.final_guest_address} mac {run.result.final_domain_mac}; tearing down")


def scenario_steps(kind: ScenarioKind, spec: ScenarioSpec) -> Steps[ScenarioRun]:
    """The steps of one scenario of SPECS."""
    by_hand: tuple[Step[ScenarioRun], ...] = (refresh_link_by_hand,) if kind == "lab-link-refresh" else ()
    watch: Step[ScenarioRun] = await_recovery if spec.recovers else observe_no_recovery
    return Steps(
        setup=(boot_nodes, start_guests, await_first_pings, open_result),
        hop=(migrate_probed, *by_hand, watch, finish_stun_probes, record_outcome),
        finish=(record_final_state,),
    )


def run_scenario(
    kind: ScenarioKind,
    *,
    say: Say = _quiet,
    timeout: float = 240.0,
    observe: float = 45.0,
    link_pause_ms: int = DEFAULT_LINK_PAUSE_MS,
    policy: MacPolicy | None = None,
    kubevirt_version: str | None = None,
    guest: GuestType | None = None,
    nic_refresh: NicRefresh | None = None,
    delivery: FixerDelivery = "hook",
    reconcile: ReconcileTiming | ReconcileMode = "kubevirt",
) -> ScenarioResult:
    """Run one scenario in a fresh lab (torn down on return) and report what happened.

    ``timeout`` bounds every wait for something expected; ``observe`` is how long a scenario
    that must NOT recover (control) is watched after the migration; ``link_pause_ms`` is the
    sidecar's pause between link down and up (default: the fixer's); ``nic_refresh`` sets the
    VMI's nic-refresh annotation. ``policy``, ``kubevirt_version`` and ``guest`` (the guest type)
    override the scenario's own. ``delivery`` inject runs the client's fixer as the webhook's
    injected container (no hook server, no hook calls; it exits on its own once the VM left a pod).
    ``reconcile``: KubeVirt's reconcile stand-in in every pod (lab/reconcile.py): ``kubevirt``
    (KubeVirt's moments, the default), ``worst`` (a target's first sync right after the fixer's
    link-down), ``off``, or a full ``ReconcileTiming``.
    """
    spec = SPECS[kind]
    spec = dataclasses.replace(
        spec,
        policy=policy or spec.policy,
        kubevirt_version=kubevirt_version or spec.kubevirt_version,
        guest=guest or spec.guest,
    )
    lab = Lab(
        link_pause_ms=link_pause_ms,
        kubevirt_version=spec.kubevirt_version,
        guest=spec.guest,
        nic_refresh=nic_refresh,
        net1=spec.net1,
        sidecar_delivery=delivery,
        reconcile=reconcile,
    )
    run = ScenarioRun(kind=kind, spec=spec, lab=lab, say=say, timeout=timeout, observe=observe)
    return run_steps(run, scenario_steps(kind, spec)).result
