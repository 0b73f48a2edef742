"""One live migration of a VM with a NIC on the macvtap binding plugin's network, measured.

The lab's macvtap network is plumbed as KubeVirt and macvtap-cni plumb it (lab.network,
lab.l2; facts V2-V6): the VM keeps its pinned MAC and the address the network's own server gave
it, so nothing in the guest has to change. What breaks is KubeVirt issue 5912 (facts V7): the
source pod outlives the migration (V8) and its macvtap, still up and still carrying the VM's
MAC, swallows every frame a neighbour on the source node sends to the VM. Two echo streams at
10 ms measure it: one from the network's gateway (behind the uplinks, the seed's ping) and one
from a neighbour pod on the source node. With ``release`` the product's node agent runs on the
source node with ``--release-stale-macvtap`` and sets the stale device down once the domain
left; without it (the control) the neighbour waits for the source pod to go.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Final

from bridge_migration_contract import MacPolicy
from lab.cluster import Lab
from lab.guests import DEFAULT_GUEST, GuestType
from lab.network import MACVTAP_NET
from lab.node_agent import RELEASE_PRIVILEGES, NodeAgent, NodeRoot
from lab.process import wait_for
from lab.shell import run
from lab.stuntime import EchoStream, silence_ms

SOURCE: Final = "a"
TARGET: Final = "b"
# How long the source pod lives on after the migration. KubeVirt's takes seconds and up to about
# 46 s plus the hooks' time (facts V8); the lab picks one fixed value so runs compare.
DEFAULT_LINGER_S: Final = 10.0
# After the source pod is gone, how long the streams keep running (a stream silent for its last
# second counts as not back).
AFTER_S: Final = 3.0


@dataclass
class MacvtapRun:
    """What one migration showed, in milliseconds where it is a time."""

    release: bool
    guest: GuestType
    linger_s: float
    address: str
    mac_before: str
    mac_after: str | None
    gateway_stun_ms: int | None  # None: the gateway never got the VM back
    neighbour_stun_ms: int | None  # None: the neighbour never got it back before the streams ended
    # When the neighbour's longest silence ended, from the target's resume (its replies in flight
    # from the source before the pause are not a recovery).
    neighbour_back_after_resume_ms: int | None
    source_stopped_after_resume_ms: int  # the source's STOPPED/MIGRATED, when the agent can act
    released: list[str]  # the agent's log lines about releases (empty for the control)
    fixup_actions: dict[str, str]  # the per-VM fixer's action per interface on the target
    target_device_mac: str  # the MAC the target pod's macvtap carries
    address_after: str | None  # the guest's last DHCP ack on the macvtap NIC when the run ended
    gateway_reaches_after: bool  # the gateway reaches address_after at the end

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _answers(netns: str, address: str) -> bool:
    return "1 received" in run(["ip", "netns", "exec", netns, "ping", "-n", "-c1", "-W1", address], check=False)


def _back_after(replies: list[float], *, since: float, at: float) -> int | None:
    """Milliseconds from ``at`` to the reply that ended the stream's longest silence after ``since``."""
    times = sorted(replies)
    gaps = [(b - a, b) for a, b in itertools.pairwise(times) if b >= since]
    if not gaps:
        return None
    return round((max(gaps)[1] - at) * 1000)


def run_macvtap_migration(
    *,
    release: bool,
    linger_s: float = DEFAULT_LINGER_S,
    guest: GuestType = DEFAULT_GUEST,
    policy: MacPolicy = "pin",
    say: Callable[[str], None] = lambda _: None,
) -> MacvtapRun:
    """Boot a VM with a pod-network NIC and a macvtap NIC on node a, migrate it to node b, and
    measure both streams until the source pod has been gone for ``AFTER_S``. A ``policy`` other
    than ``pin`` gives a VMI whose spec pins no MAC (one admitted before the add-on: today's
    webhook pins a macvtap NIC under every policy), so each pod's macvtap has a MAC of its own."""
    with Lab(macvtap=True, guest=guest) as lab:
        lab.add_nodes(SOURCE, TARGET)
        mvt = lab.mvt
        assert mvt is not None
        neighbour = mvt.add_neighbour(SOURCE)
        vm = lab.start_vm(name="mvt-vm", node=SOURCE, macvtap=True, policy=policy)
        address = mvt.address_of(vm.name)
        wait_for(lambda: _answers(mvt.switch_netns, address), timeout=240, what=f"the guest at {address}")
        wait_for(lambda: _answers(neighbour.netns, address), timeout=30, what="the neighbour reaching the guest")
        mac_before = vm.domain_mac(MACVTAP_NET.name) or ""
        agent: NodeAgent | None = None
        if release:
            root = NodeRoot(lab, SOURCE)
            root.add_pod(vm.pod)
            agent = NodeAgent(root, privileges=RELEASE_PRIVILEGES, extra_args=["--release-stale-macvtap"])
            time.sleep(3.0)  # the agent's first scan of the kubelet directory (every 2 s)
        streams = {
            "gateway": EchoStream(netns=mvt.switch_netns, address=address),
            "neighbour": EchoStream(netns=neighbour.netns, address=address),
        }
        for stream in streams.values():
            stream.start()
        time.sleep(1.0)
        say(f"migrating {vm.name} ({address}, {mac_before}) from {SOURCE} to {TARGET}, source pod lingers {linger_s}s")
        record = lab.migrate(vm, to_node=TARGET, source_linger_s=linger_s)
        time.sleep(max(0.0, record.finished + linger_s + AFTER_S - time.time()))
        until = time.time()
        replies = {name: stream.stop() for name, stream in streams.items()}
        stopped = [e.at for e in record.source_events if (e.event, e.detail) == ("STOPPED", "MIGRATED")]
        released: list[str] = []
        if agent is not None:
            released = [line for line in agent.process.log_tail(200).splitlines() if "macvtap" in line]
            agent.stop()
        fixups = vm.pod.sidecar.fixups() if vm.pod.sidecar is not None else []
        actions = {i["name"]: i["action"] for f in fixups if not f.get("dryRun") for i in f.get("interfaces", [])}
        lease = vm.guest_address(vm.guest_nic(MACVTAP_NET.name))
        address_after = lease.split("/")[0] if lease else None
        result = MacvtapRun(
            release=release,
            guest=guest,
            linger_s=linger_s,
            address=address,
            mac_before=mac_before,
            mac_after=vm.domain_mac(MACVTAP_NET.name),
            gateway_stun_ms=silence_ms(replies["gateway"], since=record.started, until=until),
            neighbour_stun_ms=silence_ms(replies["neighbour"], since=record.started, until=until),
            neighbour_back_after_resume_ms=_back_after(replies["neighbour"], since=record.started, at=record.resumed),
            source_stopped_after_resume_ms=round((stopped[0] - record.resumed) * 1000) if stopped else -1,
            released=released,
            fixup_actions=actions,
            target_device_mac=vm.pod.net.nic(MACVTAP_NET.name).cni_mac,
            address_after=address_after,
            gateway_reaches_after=bool(address_after) and _answers(mvt.switch_netns, address_after or ""),
        )
        say(json.dumps(result.as_json()))
        return result
