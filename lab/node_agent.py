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
from typing import Any, Literal

from bridge_migration_contract import DEFAULT_KEYS, MacPolicy, dump_macs
from lab.cluster import NIC_NAME, Lab, MigrationRecord, Pod, Vm, pinned_mac
from lab.console import GuestEvent
from lab.paths import REPO_ROOT
from lab.process import LabProcess, wait_for
from lab.scenario import _watch_recovery
from lab.virt_handler import HookCall, call_node_hook
from sidecar.node.target import SOCKET_IN_POD

PLUGIN_SOCKET = "var/run/kubevirt/plugins/bridge-migration.sock"
# The chart's container: root, one capability, no privilege gain (docs/install.md, "Node agent").
AGENT_PRIVILEGES = ("setpriv", "--bounding-set=-all,+dac_override", "--inh-caps=-all", "--no-new-privs")


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

    def __init__(self, node: NodeRoot, *, deadline: float = 20.0, privileges: tuple[str, ...] = AGENT_PRIVILEGES):
        self.node = node
        argv = [
            *privileges,
            sys.executable, "-m", "sidecar", "node-agent",
            "--node-root", str(node.root),
            "--socket", str(node.plugin_socket),
            "--node-name", node.node,
            "--deadline", str(deadline),
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


def run_node_mode(
    kind: NodeKind,
    *,
    say: Callable[[str], None] = lambda _msg: None,
    timeout: float = 240.0,
    hook_timeout: float = 30.0,
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
    hook calls the lab unpauses it (virtctl unpause)."""
    namespace, name = "default", "client"
    pinned = pinned_mac(namespace, name, NIC_NAME) if kind == "mac-change" else None
    lab: Lab = TargetMacsLab(target_spec_macs={NIC_NAME: pinned}) if pinned else Lab()
    with lab:
        lab.add_nodes("a", "b")
        roots = {n: NodeRoot(lab, n) for n in ("a", "b")}
        agent = NodeAgent(roots["b"])
        rss_idle = agent.rss_kib()
        server = lab.start_vm(name="server", node="a", policy="pin", sidecar=False)
        policy: MacPolicy = "follow-pod" if pinned else "pin"
        client = lab.start_vm(name=name, node="a", policy=policy, sidecar=False, ping=server.pod.ip)
        source_uid = roots["a"].add_pod(client.pod)
        nic = client.guest_nic()
        first = client.console.wait("dhcp-ack", nic=nic, timeout=timeout)
        client.console.wait("ping-reply", nic=nic, timeout=timeout)
        say(f"client leased {first.fields.get('ip')} with {first.fields.get('mac')} and pings the server")
        targets: list[str] = []  # the target pod's UID, laid out on node b before the migration

        def lay_out(pod: Pod) -> None:
            targets.append(roots["b"].add_pod(pod))

        record = lab.migrate(client, to_node="b", timeout=timeout, on_target=lay_out, paused=paused)
        say(f"migrated to {record.target_pod}; calling the node hooks as virt-handler")
        vmi = hook_vmi(
            lab,
            client,
            record=record,
            source=(source_uid, "a"),
            target=(targets[0], "b"),
            migration_uid=str(uuid.uuid4()),
            spec_macs={NIC_NAME: pinned} if pinned else None,
        )
        calls = [call_node_hook(sock, vmi=vmi, node_name="b", timeout=t) for sock, t in sorted(other_plugins)]
        calls.append(call_node_hook(agent.socket, vmi=vmi, node_name="b", timeout=hook_timeout))
        completed_at = time.time()
        for call in calls:
            say(f"hook call: {call.code} in {call.seconds:.2f} s, {call.trailers or call.error}")
        unpaused_at = None
        if paused:
            time.sleep(2)  # a while paused in the target pod, as a user would leave it
            unpaused_at = lab.unpause(client)
            say("unpaused the client (virtctl unpause)")
        ack = reply = None
        try:
            acks, replies = _watch_recovery(
                vm=client, record=record, target_ips={nic: client.pod.ip}, timeout=timeout, say=say, phase=say
            )
            ack, reply = acks[nic], replies[nic]
        except TimeoutError:
            say(f"---- agent log:\n{agent.process.log_tail(40)}")
            raise
        again = call_node_hook(agent.socket, vmi=vmi, node_name="b", timeout=hook_timeout)
        time.sleep(5)
        after = [
            e for e in client.console.events(since=again.started) if e.kind in ("carrier-up", "nic-up", "dhcp-ack")
        ]
        result = NodeModeResult(
            kind=kind,
            first_mac=first.fields.get("mac", ""),
            pinned_mac=pinned,
            record=record,
            calls=calls,
            completed_at=completed_at,
            ack=ack,
            reply=reply,
            again=again,
            events_after_again=after,
            target_ip=client.pod.ip,
            final_domain_mac=client.domain_mac(),
            agent_log=agent.node.root.joinpath("agent.log").read_text(),
            rss_idle_kib=rss_idle,
            rss_after_kib=agent.rss_kib(),
            unpaused_at=unpaused_at,
        )
        agent.stop()
    return result
