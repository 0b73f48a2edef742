"""The node agent as a real process on a real unix socket, called the way virt-handler calls it.

A grpcio client (lab/virt_handler.py, playing KubeVirt v1.9's virt-handler) talks to the
agent's grpclib server. No libvirt here: these are the answers that must come back whatever the
launcher does. The fixups themselves, against real libvirt/QEMU, are in tests/lab/test_node_agent.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from lab.process import stop, wait_for
from lab.virt_handler import call_node_hook
from sidecar.hookapi import node_hook_v1alpha1_pb2, node_hook_v1alpha1_pb2_grpc
from sidecar.nodeagent import SOCKET_IN_POD, HookError, NotForUs, locate_target, reachable_socket

REPO = Path(__file__).resolve().parents[2]
NODE = "node-b"
TARGET_UID = "6f1c2a9e-3b7d-4c55-9a0e-1d2f3a4b5c6d"
SOURCE_UID = "0b9e8d7c-6a5f-4e3d-8c2b-1a0f9e8d7c6b"


def vmi_json(*, target_uid: str = TARGET_UID, node: str = NODE, bridge: bool = True) -> dict[str, Any]:
    """The parts of a v1.9 VMI virt-handler sends in finalizeMigration that the agent reads."""
    binding: dict[str, Any] = {"bridge": {}} if bridge else {"masquerade": {}}
    return {
        "metadata": {"name": "client", "namespace": "default", "annotations": {}},
        "spec": {
            "domain": {"devices": {"interfaces": [{"name": "default", **binding}]}},
            "networks": [{"name": "default", "pod": {}}],
        },
        "status": {
            "nodeName": node,
            "activePods": {SOURCE_UID: "node-a", target_uid: node},
            "migrationState": {
                "migrationUid": "1e2d3c4b-0000-4000-8000-000000000001",
                "targetNode": node,
                "targetPod": "virt-launcher-client-abcde",
                "sourceNode": "node-a",
            },
        },
    }


def listening_socket(path: Path) -> socket.socket:
    """A unix socket that accepts connections and never says anything: a launcher whose libvirt
    hangs. (A real stand-in: the kernel queues the connection, nothing answers.)"""
    path.parent.mkdir(parents=True, exist_ok=True)
    with reachable_socket(path) as short:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(short)
    sock.listen(8)
    return sock


class Agent:
    def __init__(self, tmp: Path, *extra: str) -> None:
        self.socket = tmp / "plugins" / "bridge-migration.sock"
        self.pods = tmp / "kubelet-pods"
        self.pods.mkdir()
        self.log = tmp / "agent.log"
        argv = [
            sys.executable, "-m", "sidecar", "node-agent",
            "--socket", str(self.socket), "--kubelet-pods-dir", str(self.pods), "--node-name", NODE, *extra,
        ]  # fmt: skip
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}
            )
        wait_for(
            self.socket.exists,
            timeout=30,
            interval=0.05,
            what=f"the agent's socket {self.socket}",
            proc=self.proc,
            log=self.log.read_text,
        )

    def stop(self) -> int:
        return stop(self.proc, grace=30)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    running = Agent(tmp_path, "--deadline", "5")
    yield running
    if running.proc.poll() is None:
        running.stop()


def test_the_agent_serves_execute_node_hook_on_its_unix_socket(agent: Agent) -> None:
    call = call_node_hook(agent.socket, vmi=vmi_json(), node_name=NODE, hook_point="PreVMStart")
    assert (call.code, call.result) == ("OK", "skipped")
    assert "not ours" in call.trailers["bridge-migration-message"]
    # Only virt-handler (root) and the agent's own user may call it.
    assert agent.socket.stat().st_mode & 0o777 == 0o600


def test_sigterm_stops_the_agent_with_0_and_removes_its_socket(agent: Agent) -> None:
    assert agent.stop() == 0
    assert not agent.socket.exists()


@pytest.mark.parametrize(
    ("vmi", "result", "says"),
    [
        (b"{not json", "error", "not JSON"),
        (b"[]", "error", "not a JSON object"),
        (b'{"metadata": {"name": "x"}}', "error", "metadata.namespace"),
    ],
)
def test_a_malformed_vmi_is_answered_ok_with_the_reason(agent: Agent, vmi: bytes, result: str, says: str) -> None:
    with grpc.insecure_channel(f"unix://{agent.socket}") as channel:
        stub = node_hook_v1alpha1_pb2_grpc.NodeHookServiceStub(channel)
        request = node_hook_v1alpha1_pb2.ExecuteNodeHookRequest(
            hookPoint="PostMigrationTarget", vmi=vmi, node_context=node_hook_v1alpha1_pb2.NodeContext(node_name=NODE)
        )
        _response, rpc = stub.ExecuteNodeHook.with_call(request, timeout=10)
        trailers = dict(rpc.trailing_metadata())
    assert trailers["bridge-migration-result"] == result
    assert says in trailers["bridge-migration-message"]


def test_a_call_for_another_node_or_a_vmi_without_our_nics_changes_nothing(agent: Agent) -> None:
    other = call_node_hook(agent.socket, vmi=vmi_json(), node_name="node-c")
    assert (other.code, other.result) == ("OK", "error")
    assert "this agent serves 'node-b'" in other.trailers["bridge-migration-message"]
    masquerade = call_node_hook(agent.socket, vmi=vmi_json(bridge=False), node_name=NODE)
    assert (masquerade.code, masquerade.result) == ("OK", "skipped")


def test_a_launcher_whose_libvirt_hangs_is_answered_ok_before_the_callers_timeout(agent: Agent) -> None:
    hung = listening_socket(agent.pods / TARGET_UID / SOCKET_IN_POD)
    try:
        # The Plugin CR may set a shorter timeout than our --deadline (5 s here): 3 s wins.
        call = call_node_hook(agent.socket, vmi=vmi_json(), node_name=NODE, timeout=3)
        assert call.code == "OK", call.error
        assert call.result in ("running", "failed")
        assert call.seconds < 3
        # A second call for the same migration joins the running fixup rather than starting one.
        again = call_node_hook(agent.socket, vmi=vmi_json(), node_name=NODE, timeout=3)
        assert (again.code, again.result) == ("OK", "running")
        assert again.seconds < 3
    finally:
        hung.close()  # the launcher's libvirt goes away: the one fixup ends, reported in the log
    wait_for(lambda: "late fixup" in agent.log.read_text(), timeout=10, what="the late fixup in the agent's log")
    assert agent.log.read_text().count("late fixup of default_client: failed") == 1


def test_no_launcher_socket_on_this_node_is_an_error_answered_at_once(agent: Agent) -> None:
    call = call_node_hook(agent.socket, vmi=vmi_json(), node_name=NODE)
    assert (call.code, call.result) == ("OK", "error")
    assert "no launcher pod" in call.trailers["bridge-migration-message"]
    assert call.seconds < 2


def test_the_target_is_the_active_pod_on_this_node_with_a_libvirt_socket(tmp_path: Path) -> None:
    pods = tmp_path / "pods"
    sock = listening_socket(pods / TARGET_UID / SOCKET_IN_POD)
    try:
        target = locate_target(vmi_json(), node_name=NODE, kubelet_pods=pods)
    finally:
        sock.close()
    assert (target.pod_uid, target.domain, target.interfaces) == (TARGET_UID, "default_client", ("default",))
    assert target.migration_uid == "1e2d3c4b-0000-4000-8000-000000000001"
    assert target.socket == pods / TARGET_UID / SOCKET_IN_POD


def test_a_migration_to_another_node_and_a_vmi_without_migration_are_refused(tmp_path: Path) -> None:
    with pytest.raises(NotForUs, match="migrates to node node-b"):
        locate_target(vmi_json(), node_name="node-x", kubelet_pods=tmp_path)
    no_migration = vmi_json()
    del no_migration["status"]["migrationState"]
    with pytest.raises(HookError, match="migrationState"):
        locate_target(no_migration, node_name=NODE, kubelet_pods=tmp_path)
    sneaky = vmi_json(target_uid="../../etc")
    with pytest.raises(HookError, match="not a plain name"):
        locate_target(sneaky, node_name=NODE, kubelet_pods=tmp_path)


def test_a_socket_path_longer_than_sun_path_is_reached_through_proc_self_fd(tmp_path: Path) -> None:
    # The real layout under /var/lib/kubelet/pods is 121 characters: too long to connect to.
    deep = tmp_path / ("d" * 60) / TARGET_UID / SOCKET_IN_POD
    assert len(str(deep)) > 108
    server = listening_socket(deep)
    try:
        with reachable_socket(deep) as short:
            assert short.startswith("/proc/self/fd/")
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(short)
            client.close()
    finally:
        server.close()


def _node_agent_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar", "node-agent", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        timeout=30,
        check=False,
    )


def test_every_node_agent_flag_has_an_environment_twin(tmp_path: Path) -> None:
    out = _node_agent_cli("--help").stdout
    for flag in ("SOCKET", "NODE_ROOT", "KUBELET_PODS_DIR", "NODE_NAME", "LIBVIRT_URI_TEMPLATE", "DEADLINE"):
        assert f"BM_SIDECAR_{flag}" in out
    # The twin is read: the agent listens where the environment says.
    sock = tmp_path / "env.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "node-agent", "--node-name", NODE],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "BM_SIDECAR_SOCKET": str(sock)},
    )
    try:
        wait_for(
            sock.exists, timeout=30, interval=0.05, what=f"the agent's socket at $BM_SIDECAR_SOCKET {sock}", proc=proc
        )
    finally:
        assert stop(proc, grace=30) == 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--deadline", "30"], "--deadline must be > 0 and < 30"),
        (["--deadline", "soon"], "bad number"),
        (["--libvirt-uri-template", "qemu:///session"], "must contain {socket}"),
        (["--annotation-prefix", "no-slash"], "--annotation-prefix"),
    ],
)
def test_bad_node_agent_flags_exit_2_with_a_message_and_serve_nothing(
    tmp_path: Path, args: list[str], says: str
) -> None:
    sock = tmp_path / "never.sock"
    result = _node_agent_cli("--socket", str(sock), *args)
    assert result.returncode == 2
    assert says in result.stderr
    assert not sock.exists()
