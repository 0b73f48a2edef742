"""Node mode, end to end: no sidecar in any pod; the lab plays virt-handler on the target node.

Each test migrates a client guest from node a to node b (real libvirt/QEMU, the pods' own
session virtqemud as uid 107, KubeVirt v1.9's DHCP rule), then calls the node hooks the way
virt-handler's finalizeMigration does (lab/virt_handler.py: 2 s dial, the hook's timeout,
failureStrategy Ignore). Our agent (``python -m sidecar node-agent``, root with only
CAP_DAC_OVERRIDE) reaches the target pod's libvirt through node b's kubelet directory layout.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from lab.cluster import Lab
from lab.dhcp import server_ip
from lab.node_agent import AGENT_PRIVILEGES, NodeAgent, NodeModeResult, NodeRoot, run_node_mode
from lab.virt_handler import call_node_hook
from sidecar.hookapi import node_hook_v1alpha1_pb2, node_hook_v1alpha1_pb2_grpc

pytestmark = pytest.mark.lab


def _assert_recovered(result: NodeModeResult, *, guest_mac: str) -> None:
    assert result.ack is not None, "the guest never renewed its lease in the target pod"
    assert result.ack.fields["ip"].split("/")[0] == result.target_ip
    assert result.ack.fields["mac"] == guest_mac
    assert result.ack.fields["server"] == server_ip(0)
    assert result.reply is not None, "no ping reply after the migration"
    assert result.reply.after(result.ack)


def _assert_idempotent(result: NodeModeResult) -> None:
    # virt-handler may call again for the same migration: answered, and the NIC is left alone.
    assert (result.again.code, result.again.result) == ("OK", "noop"), result.again.trailers
    assert result.events_after_again == [], "the second call flapped the guest's NIC again"


def test_same_mac_the_agent_refreshes_the_link_and_the_guest_pings_from_the_target_pod() -> None:
    result = run_node_mode("same-mac", say=print)
    (ours,) = result.calls
    assert (ours.code, ours.result) == ("OK", "unverified"), ours.trailers
    assert ours.seconds < 30
    _assert_recovered(result, guest_mac=result.first_mac)
    assert result.final_domain_mac == result.first_mac
    refreshed = f"default link-refresh done {result.first_mac}->{result.first_mac}"
    assert refreshed in ours.trailers["bridge-migration-message"]
    assert "trigger=node-hook result=unverified" in result.agent_log
    _assert_idempotent(result)


def test_mac_change_the_agent_reattaches_the_nic_with_the_vmis_mac_and_the_guest_pings() -> None:
    result = run_node_mode("mac-change", say=print)
    assert result.pinned_mac is not None and result.pinned_mac != result.first_mac
    (ours,) = result.calls
    assert (ours.code, ours.result) == ("OK", "unverified"), ours.trailers
    reattached = f"default reattach done {result.first_mac}->{result.pinned_mac}"
    assert reattached in ours.trailers["bridge-migration-message"]
    _assert_recovered(result, guest_mac=result.pinned_mac)
    assert result.final_domain_mac == result.pinned_mac
    _assert_idempotent(result)


def test_a_vm_migrated_paused_is_fixed_when_it_is_unpaused() -> None:
    # KubeVirt migrates a paused VMI paused: at PostMigrationTarget there is nothing to fix yet.
    result = run_node_mode("same-mac", say=print, paused=True)
    (ours,) = result.calls
    assert (ours.code, ours.result) == ("OK", "deferred"), ours.trailers
    assert "fixed when it is unpaused" in ours.trailers["bridge-migration-message"]
    assert result.unpaused_at is not None
    assert "fixup of default_client after its unpause: unverified" in result.agent_log
    _assert_recovered(result, guest_mac=result.first_mac)
    assert result.ack is not None and result.ack.at > result.unpaused_at
    _assert_idempotent(result)


class SlowPluginFake(node_hook_v1alpha1_pb2_grpc.NodeHookServiceServicer):
    """A FAKE plugin (not ours): answers each call only after a minute."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def ExecuteNodeHook(  # noqa: N802 - gRPC method name
        self, request: node_hook_v1alpha1_pb2.ExecuteNodeHookRequest, context: grpc.ServicerContext
    ) -> node_hook_v1alpha1_pb2.ExecuteNodeHookResponse:
        self.release.wait(60)
        return node_hook_v1alpha1_pb2.ExecuteNodeHookResponse()


@pytest.fixture
def slow_plugin(tmp_path: Path) -> Iterator[Path]:
    socket = tmp_path / "aaa-slow.sock"
    fake = SlowPluginFake()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    node_hook_v1alpha1_pb2_grpc.add_NodeHookServiceServicer_to_server(fake, server)
    server.add_insecure_port(f"unix://{socket}")
    server.start()
    yield socket
    fake.release.set()
    server.stop(grace=None)


def test_a_slow_and_a_dead_plugin_hold_the_migration_no_longer_than_their_timeouts(
    slow_plugin: Path, tmp_path: Path
) -> None:
    # virt-handler runs hooks sorted by plugin name: "aaa-slow" (5 s timeout), then "aab-dead"
    # (its socket does not exist), then ours; with Ignore each failure is logged and skipped.
    dead = tmp_path / "aab-dead.sock"
    result = run_node_mode("same-mac", say=print, other_plugins=[(slow_plugin, 5.0), (dead, 30.0)])
    slow, gone, ours = result.calls
    assert slow.code == "DEADLINE_EXCEEDED" and slow.returned_error is None
    assert 5 <= slow.seconds < 6
    assert gone.code == "UNAVAILABLE" and gone.returned_error is None
    assert gone.seconds < 3
    assert (ours.code, ours.result) == ("OK", "unverified")
    # The lab marks the migration completed right after the calls: bounded by their timeouts.
    assert result.completed_at - slow.started < 5 + 3 + 30
    _assert_recovered(result, guest_mac=result.first_mac)


@pytest.mark.parametrize(
    ("privileges", "reached"),
    [
        # The chart's container: root, CAP_DAC_OVERRIDE only. It reaches virtqemud, which then
        # has no such domain (nothing runs in this pod).
        (AGENT_PRIVILEGES, True),
        # Root without any capability: the launcher's socket belongs to uid 107.
        (("setpriv", "--bounding-set=-all", "--inh-caps=-all", "--no-new-privs"), False),
        # The launcher's own user: the kubelet's pod directories are root's, mode 0750.
        (("setpriv", "--reuid=107", "--regid=107", "--clear-groups", "--inh-caps=-all", "--no-new-privs"), False),
    ],
    ids=["root-dac-override", "root-no-caps", "uid-107"],
)
def test_the_agent_needs_root_and_cap_dac_override_to_reach_a_launchers_libvirt(
    lab: Lab, privileges: tuple[str, ...], reached: bool
) -> None:
    node = NodeRoot(lab, "b")
    pod = lab.create_pod(vm="client", node="b")
    target_uid = node.add_pod(pod)
    if "--reuid=107" in privileges:
        # Every chance for uid 107: its own socket directory. The kubelet's pod tree is what stops it.
        os.chown(node.plugin_socket.parent, 107, 107)
    agent = NodeAgent(node, privileges=privileges)
    try:
        vmi = {
            "metadata": {"name": "client", "namespace": "default"},
            "spec": {
                "domain": {"devices": {"interfaces": [{"name": "default", "bridge": {}}]}},
                "networks": [{"name": "default", "pod": {}}],
            },
            "status": {
                "activePods": {target_uid: "b"},
                "migrationState": {"migrationUid": "m-1", "targetNode": "b", "targetPod": pod.name},
            },
        }
        call = call_node_hook(agent.socket, vmi=vmi, node_name="b", timeout=10)
    finally:
        agent.stop()
    assert call.code == "OK"
    message = call.trailers["bridge-migration-message"]
    if reached:
        assert call.result == "failed"
        assert "default_client" in message and "does not exist" in message, message
    else:
        assert call.result in ("failed", "error")
        assert "Permission denied" in message, message
