"""The node agent as a real process on a real unix socket, called the way virt-handler calls it.

A grpcio client (lab/virt_handler.py, playing KubeVirt v1.9's virt-handler) talks to the
agent's grpclib server. No libvirt here: these are the answers that must come back whatever the
launcher does. The fixups themselves, against real libvirt/QEMU, are in tests/lab/test_node_agent.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from lab.process import stop, wait_for
from lab.virt_handler import call_node_hook
from sidecar.hookapi import node_hook_v1alpha1_pb2, node_hook_v1alpha1_pb2_grpc
from sidecar.node.target import SOCKET_IN_POD
from tests.sidecar.node.launchers import NODE, TARGET_UID, listening_socket, vmi_json

REPO = Path(__file__).resolve().parents[3]


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
