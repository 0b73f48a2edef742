"""`python -m sidecar serve` and `node-agent` with --log-format json (or BM_SIDECAR_LOG_FORMAT), as
real processes: every line they write is one JSON object with KubeVirt's keys, and the node agent's
line for a call carries the VMI's namespace and name.

libvirt for `serve` is the test driver (`test:///default`), as in tests/sidecar/pod/test_serve.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lab.process import stop, wait_for
from lab.virt_handler import call_node_hook
from tests.sidecar.node.launchers import NODE, vmi_json
from tests.sidecar.serving import REPO, SidecarProcess

KUBEVIRT_KEYS = {"timestamp", "level", "component", "pos", "msg"}


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as the JSON object it must be (json.loads fails the test otherwise)."""
    docs = [json.loads(line) for line in text.splitlines()]
    assert docs, "no log lines at all"
    for doc in docs:
        assert set(doc) >= KUBEVIRT_KEYS, doc
    return docs


def test_serve_with_log_format_json_writes_only_json_lines(tmp_path: Path) -> None:
    proc = SidecarProcess(
        libvirt_uri="test:///default", tmp=tmp_path, domain="not-there-yet", extra=["--log-format", "json"]
    )
    try:
        proc.wait_ready()
        proc.wait_for(lambda: proc.client.get("/healthz").json()["libvirtConnected"], timeout=20, what="connect")
        assert proc.client.post("/v1/fixup", json={}).status_code == 409
    finally:
        assert proc.stop() == 0
    docs = json_lines(proc.log_path.read_text())
    assert {d["component"] for d in docs} == {"bridge-migration-sidecar"}
    (refused,) = [d for d in docs if "POST /v1/fixup refused (409)" in d["msg"]]
    assert (refused["level"], refused["logger"]) == ("info", "sidecar.pod.rest")
    assert any(d["msg"] == "SIGTERM: stopping" and d["logger"] == "sidecar.pod.serve" for d in docs)


def test_the_node_agent_takes_it_from_its_environment_twin_and_names_the_vmi_of_each_call(tmp_path: Path) -> None:
    sock = tmp_path / "plugins" / "bridge-migration.sock"
    (tmp_path / "pods").mkdir()
    log = tmp_path / "agent.log"
    argv = [sys.executable, "-m", "sidecar", "node-agent", "--socket", str(sock),
            "--kubelet-pods-dir", str(tmp_path / "pods"), "--node-name", NODE, "--deadline", "5"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "BM_SIDECAR_LOG_FORMAT": "json"}
    with log.open("wb") as out:
        agent = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    try:
        wait_for(
            sock.exists, timeout=30, interval=0.05, what=f"the agent's socket {sock}", proc=agent, log=log.read_text
        )
        call = call_node_hook(sock, vmi=vmi_json(), node_name=NODE)
        assert call.result == "error"  # no launcher pod of that VMI on this "node"
    finally:
        assert stop(agent, grace=30) == 0
    docs = json_lines(log.read_text())
    assert {d["component"] for d in docs} == {"bridge-migration-node-agent"}
    (line,) = [d for d in docs if d["msg"].startswith("ExecuteNodeHook PostMigrationTarget")]
    assert line["level"] == "warning"
    assert (line["kind"], line["namespace"], line["name"]) == ("VirtualMachineInstance", "default", "client")
    assert (line["hookPoint"], line["result"]) == ("PostMigrationTarget", "error")


@pytest.mark.parametrize("command", ["serve", "node-agent"])
def test_each_program_lists_the_flag_and_its_twin_and_refuses_another_format(command: str) -> None:
    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sidecar", command, *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
            check=False,
            env={**os.environ, "PYTHONPATH": str(REPO), **env},
        )

    assert "BM_SIDECAR_LOG_FORMAT" in run("--help").stdout
    bad = run("--log-format", "yaml")
    assert bad.returncode == 2 and "invalid choice: 'yaml'" in bad.stderr
    # argparse does not check a default, which is where the twin lands: the program does.
    bad_twin = run(BM_SIDECAR_LOG_FORMAT="yaml")
    assert bad_twin.returncode == 2 and "--log-format: must be one of text, json, got 'yaml'" in bad_twin.stderr
