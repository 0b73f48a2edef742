"""Node mode in the lab: a node's kubelet directory, the product's node agent, and the VMI
virt-handler sends it.

A lab node is a network namespace, not a machine, so each node gets a directory standing for
its root file system (``<lab>/node-<name>/``), with the kubelet's layout for every launcher pod
on that node: ``var/lib/kubelet/pods/<pod uid>/volumes/kubernetes.io~empty-dir/libvirt-runtime``,
a link to the lab pod's real libvirt runtime directory (its session virtqemud socket; facts P8,
L4). The directories are root's with mode 0750, as the kubelet makes them.

The agent runs from this checkout (``python -m sidecar node-agent``) with the chart's
privileges: root with every capability dropped but CAP_DAC_OVERRIDE (needed to open the
launcher's socket, which belongs to uid 107), no new privileges.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from bridge_migration_contract import DEFAULT_KEYS, dump_macs
from lab.cluster import NIC_NAME, Lab, MigrationRecord, Pod, Vm, pinned_mac
from lab.console import GuestEvent
from lab.paths import REPO_ROOT
from lab.process import LabProcess, wait_for
from lab.scenario import (
    Run,
    ScenarioSpec,
    Step,
    Steps,
    await_first_pings,
    await_recovery,
    boot_nodes,
    migrate,
    run_steps,
    start_guests,
)
from lab.virt_handler import DEFAULT_TIMEOUT_S, HookCall, call_node_hook
from sidecar.node.settings import NodeAgentSettings
from sidecar.node.target import SOCKET_IN_POD

PLUGIN_SOCKET = "var/run/kubevirt/plugins/bridge-migration.sock"
# The chart's container: root, one capability, no privilege gain (docs/install.md, "Node agent").
AGENT_PRIVILEGES = ("setpriv", "--bounding-set=-all,+dac_override", "--inh-caps=-all", "--no-new-privs")
# With --release-stale-macvtap (issue 27): also enter a source pod's network namespace and set its
# stale macvtap down (sys_ptrace to open its namespace file, sys_admin for setns, net_admin).
RELEASE_PRIVILEGES = (
    "setpriv",
    "--bounding-set=-all,+dac_override,+sys_ptrace,+sys_admin,+net_admin",
    "--inh-caps=-all",
    "--no-new-privs",
)


@dataclass
class NodeRoot:
    """The directory that stands for one lab node's root file system."""

    lab: Lab
    node: str
    pod_uids: dict[str, str] = field(default_factory=dict)  # pod name -> its UID

    @property
    def root(self) -> Path:
        return self.lab.run_dir / f"node-{self.node}"

    @property
    def kubelet_pods(self) -> Path:
        return self.root / "var/lib/kubelet/pods"

    @property
    def plugin_socket(self) -> Path:
        return self.root / PLUGIN_SOCKET

    def __post_init__(self) -> None:
        # The DaemonSet's hostPath (DirectoryOrCreate): made by the kubelet, root's, mode 0755.
        os.makedirs(self.plugin_socket.parent, mode=0o755, exist_ok=True)
        os.makedirs(self.kubelet_pods, mode=0o750, exist_ok=True)

    def add_pod(self, pod: Pod) -> str:
        """Lay ``pod`` out as the kubelet would on this node; returns its UID."""
        if pod.daemon.runtime_dir is None:
            raise ValueError("node mode plays KubeVirt's non-root launcher (session libvirt)")
        uid = str(uuid.uuid4())
        runtime = (self.kubelet_pods / uid / SOCKET_IN_POD).parent  # .../libvirt-runtime
        os.makedirs(runtime.parent, mode=0o750, exist_ok=True)
        runtime.symlink_to(pod.daemon.runtime_dir)
        self.pod_uids[pod.name] = uid
        return uid


class NodeAgent:
    """The product's node agent for one lab node, as the chart's DaemonSet would run it."""

    def __init__(
        self,
        node: NodeRoot,
        *,
        deadline: float = NodeAgentSettings().deadline,
        privileges: tuple[str, ...] = AGENT_PRIVILEGES,
        extra_args: Sequence[str] = (),
    ):
        self.node = node
        argv = [
            *privileges,
            sys.executable, "-m", "sidecar", "node-agent",
            "--node-root", str(node.root),
            "--socket", str(node.plugin_socket),
            "--node-name", node.node,
            "--deadline", str(deadline),
            *extra_args,
        ]  # fmt: skip
        env_argv = ["env", f"PYTHONPATH={REPO_ROOT}", *argv]
        self.process = LabProcess(name=f"node-agent {node.node}", argv=env_argv, log_path=node.root / "agent.log")
        wait_for(self._ready, timeout=30, what=f"node agent socket {node.plugin_socket}")

    def _ready(self) -> bool:
        if not self.process.alive():
            raise RuntimeError(f"node agent exited:\n{self.process.log_tail()}")
        return self.node.plugin_socket.exists()

    @property
    def socket(self) -> Path:
        return self.node.plugin_socket

    def rss_kib(self) -> int:
        """VmRSS of the agent's Python process (setpriv and env exec into it: same pid)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        self.process.stop()


def hook_vmi(
    lab: Lab,
    vm: Vm,
    *,
    record: MigrationRecord,
    source: tuple[str, str],
    target: tuple[str, str],
    migration_uid: str,
    spec_macs: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The VMI as virt-handler holds it in ``finalizeMigration`` on the target (facts P6, P7):
    the lab's VMI object plus the migration status. ``source``/``target``: (pod UID, node).
    ``spec_macs`` replaces the spec's ``macAddress`` (and our ``macs`` annotation) per interface."""
    vmi = lab.vmi_object(vm)
    if spec_macs:
        for iface in vmi["spec"]["domain"]["devices"]["interfaces"]:
            if iface["name"] in spec_macs:
                iface["macAddress"] = spec_macs[iface["name"]]
        vmi["metadata"]["annotations"][DEFAULT_KEYS.macs] = dump_macs(dict(spec_macs))
    (source_uid, source_node), (target_uid, target_node) = source, target
    status = vmi.setdefault("status", {})
    status["nodeName"] = target_node  # ackMigrationCompletion set it before finalizeMigration
    status["activePods"] = {source_uid: source_node, target_uid: target_node}
    status["migrationState"] = {
        "migrationUid": migration_uid,
        "sourceNode": source_node,
        "sourcePod": record.source_pod,
        "targetNode": target_node,
        "targetPod": record.target_pod,
        "startTimestamp": _rfc3339(record.started),
        "endTimestamp": _rfc3339(record.finished),
        "targetNodeDomainDetected": True,
        "completed": False,
    }
    return vmi


def _rfc3339(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TargetMacsLab(Lab):
    """A lab whose migration targets answer DHCP for given spec MACs (by KubeVirt's v1.9 rule the
    spec MAC wins), for a VMI whose spec names a MAC the running guest does not have."""

    def __init__(self, *, target_spec_macs: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target_spec_macs = dict(target_spec_macs)

    def create_target_pod(self, vm: Vm, *, node: str) -> Pod:
        return self.create_pod(
            vm=vm.name,
            node=node,
            spec_macs=self.target_spec_macs,
            status_macs={n.name: mac for n in vm.networks if (mac := vm.domain_mac(n.name))},
            networks=vm.networks,
        )


NodeKind = Literal["same-mac", "mac-change"]


@dataclass
class NodeModeResult:
    """One node-mode migration: what virt-handler's calls returned, what the guest did."""

    kind: NodeKind
    first_mac: str  # the guest's MAC before the migration
    pinned_mac: str | None  # the MAC the VMI's spec names, when it does
    record: MigrationRecord
    calls: list[HookCall]  # every node hook call of the finalize pass, in virt-handler's order
    completed_at: float  # when the lab marked the migration completed (after the calls)
    ack: GuestEvent | None
    reply: GuestEvent | None
    again: HookCall  # a second call for the same migration (virt-handler's retry or resync)
    events_after_again: list[GuestEvent]  # guest link/DHCP events in the 5 s after that call
    target_ip: str
    final_domain_mac: str | None
    agent_log: str
    rss_idle_kib: int
    rss_after_kib: int
    unpaused_at: float | None = None  # paused: when the lab unpaused the VM


SOURCE_NODE, TARGET_NODE = "a", "b"
NODE_SPECS: Final[dict[NodeKind, ScenarioSpec]] = {
    "same-mac": ScenarioSpec(
        "pin", False, (TARGET_NODE,), True, "node mode, pinned MAC: the node agent refreshes the link"
    ),
    "mac-change": ScenarioSpec(
        "follow-pod",
        False,
        (TARGET_NODE,),
        True,
        "node mode, the VMI's spec names another MAC: the node agent reattaches the NIC with it",
    ),
}


@dataclass(eq=False, repr=False)
class NodeRun(Run):
    """A node-mode run: no sidecar in any pod, our node agent on node b, the lab playing
    virt-handler there after the migration."""

    kind: NodeKind
    pinned: str | None = None  # mac-change: the MAC the VMI's spec names, which the target serves
    hook_timeout: float = DEFAULT_TIMEOUT_S
    other_plugins: Sequence[tuple[Path, float]] = ()  # (socket, timeout) of plugins called before ours
    # start_node_agent
    roots: dict[str, NodeRoot] = field(init=False)
    agent: NodeAgent = field(init=False)
    rss_idle_kib: int = field(init=False)
    # lay_out_pods: the client's pod UIDs in the kubelet layout (source, then each target)
    source_uid: str = field(init=False)
    target_uids: list[str] = field(default_factory=list)
    # call_node_hooks
    vmi: dict[str, Any] = field(init=False)
    calls: list[HookCall] = field(init=False)
    completed_at: float = field(init=False)
    unpaused_at: float | None = None  # unpause
    # call_again
    again: HookCall = field(init=False)
    events_after_again: list[GuestEvent] = field(init=False)
    result: NodeModeResult = field(init=False)  # collect_node_result

    def diagnose(self) -> None:
        super().diagnose()
        self.say(f"---- agent log:\n{self.agent.process.log_tail(40)}")


def start_node_agent(run: NodeRun) -> None:
    """Both nodes' root directories, and our agent on the target node (sets roots, agent,
    rss_idle_kib)."""
    run.roots = {n: NodeRoot(run.lab, n) for n in (SOURCE_NODE, TARGET_NODE)}
    run.agent = NodeAgent(run.roots[TARGET_NODE])
    run.rss_idle_kib = run.agent.rss_kib()


def lay_out_pods(run: NodeRun) -> None:
    """The client's pod in its node's kubelet layout, and each target pod in the target node's
    once it exists, before the migration (sets source_uid, fills target_uids)."""
    run.source_uid = run.roots[SOURCE_NODE].add_pod(run.client.pod)
    run.on_target.append(lambda pod: run.target_uids.append(run.roots[TARGET_NODE].add_pod(pod)))


def call_node_hooks(run: NodeRun) -> None:
    """Call the node hooks as virt-handler's finalizeMigration does: ``other_plugins`` sorted by
    name, then ours, all with failureStrategy Ignore; the lab marks the migration completed right
    after them (sets vmi, calls, completed_at)."""
    run.phase(f"migrated to {run.record.target_pod}; calling the node hooks as virt-handler")
    run.vmi = hook_vmi(
        run.lab,
        run.client,
        record=run.record,
        source=(run.source_uid, SOURCE_NODE),
        target=(run.target_uids[-1], TARGET_NODE),
        migration_uid=str(uuid.uuid4()),
        spec_macs={NIC_NAME: run.pinned} if run.pinned else None,
    )
    calls = [call_node_hook(s, vmi=run.vmi, node_name=TARGET_NODE, timeout=t) for s, t in sorted(run.other_plugins)]
    calls.append(call_node_hook(run.agent.socket, vmi=run.vmi, node_name=TARGET_NODE, timeout=run.hook_timeout))
    run.completed_at = time.time()
    run.calls = calls
    for call in calls:
        run.phase(f"hook call: {call.code} in {call.seconds:.2f} s, {call.trailers or call.error}")


def unpause(run: NodeRun) -> None:
    """A while paused in the target pod, as a user would leave it, then virtctl unpause (sets
    unpaused_at)."""
    time.sleep(2)
    run.unpaused_at = run.lab.unpause(run.client)
    run.phase("unpaused the client (virtctl unpause)")


def call_again(run: NodeRun) -> None:
    """The same call once more (virt-handler's retry or resync), then the guest's link and DHCP
    events in the 5 s after it (sets again, events_after_again)."""
    run.again = call_node_hook(run.agent.socket, vmi=run.vmi, node_name=TARGET_NODE, timeout=run.hook_timeout)
    time.sleep(5)
    run.events_after_again = [
        e for e in run.client.console.events(since=run.again.started) if e.kind in ("carrier-up", "nic-up", "dhcp-ack")
    ]


def collect_node_result(run: NodeRun) -> None:
    """What the calls returned and the guest did, then stop the agent (sets result)."""
    run.result = NodeModeResult(
        kind=run.kind,
        first_mac=run.leases[run.primary].fields.get("mac", ""),
        pinned_mac=run.pinned,
        record=run.record,
        calls=run.calls,
        completed_at=run.completed_at,
        ack=run.acks[run.primary],
        reply=run.replies[run.primary],
        again=run.again,
        events_after_again=run.events_after_again,
        target_ip=run.client.pod.ip,
        final_domain_mac=run.client.domain_mac(),
        agent_log=run.agent.node.root.joinpath("agent.log").read_text(),
        rss_idle_kib=run.rss_idle_kib,
        rss_after_kib=run.agent.rss_kib(),
        unpaused_at=run.unpaused_at,
    )
    run.agent.stop()


def node_steps(*, paused: bool) -> Steps[NodeRun]:
    """Node mode's steps: the scenario runner's shared ones around the node agent's."""
    unpaused: tuple[Step[NodeRun], ...] = (unpause,) if paused else ()
    return Steps(
        setup=(boot_nodes, start_node_agent, start_guests, lay_out_pods, await_first_pings),
        hop=(migrate, call_node_hooks, *unpaused, await_recovery, call_again),
        finish=(collect_node_result,),
    )


def run_node_mode(
    kind: NodeKind,
    *,
    say: Callable[[str], None] = lambda _msg: None,
    timeout: float = 240.0,
    hook_timeout: float = DEFAULT_TIMEOUT_S,
    other_plugins: Sequence[tuple[Path, float]] = (),
    paused: bool = False,
) -> NodeModeResult:
    """A server and a client guest on node a, no sidecar in any pod; the client migrates to node
    b, then the lab calls the node hooks as virt-handler's finalizeMigration would: first
    ``other_plugins`` (socket, timeout), then ours, all with failureStrategy Ignore.

    same-mac: the webhook pinned the MAC (policy pin), the target serves it: a link refresh.
    mac-change: the guest runs with its first pod's MAC (follow-pod) while the VMI's spec names
    another (constructed: in v1.9 a target serves the spec MAC): a reattach with the spec's MAC.
    ``paused``: the VM is paused and migrated paused, as KubeVirt migrates a paused VMI; after the
    hook calls the lab unpauses it (virtctl unpause). The steps run in ``lab.scenario.run_steps``."""
    pinned = pinned_mac("default", "client", NIC_NAME) if kind == "mac-change" else None
    lab: Lab = TargetMacsLab(target_spec_macs={NIC_NAME: pinned}) if pinned else Lab()
    run = NodeRun(
        kind=kind,
        spec=NODE_SPECS[kind],
        lab=lab,
        say=say,
        timeout=timeout,
        paused=paused,
        pinned=pinned,
        hook_timeout=hook_timeout,
        other_plugins=other_plugins,
    )
    return run_steps(run, node_steps(paused=paused)).result
