"""Start-up inside KubeVirt's 200m CPU / 64M quota, called the way virt-launcher calls it.

virt-launcher polls the hook directory and calls Info on a socket as soon as it sees it, with
a 1 s deadline; an error there makes virt-launcher panic and the VM fails to start. Under a
200m quota the sidecar's imports run at a fifth of a core, so the socket must not appear before
the server can answer. The process runs in real cgroups made for this test (lab.cgroups).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from kubelab.ports import free_port
from lab.cgroups import LimitedGroup
from lab.process import stop, wait_for
from sidecar.hookapi import hook_info_pb2, hook_info_pb2_grpc
from sidecar.pod.hook_server import SOCKET_NAME
from tests.sidecar.serving import REPO

pytestmark = pytest.mark.lab  # root: it makes cgroups


def test_info_answers_within_virt_launchers_1s_deadline_the_moment_the_socket_appears(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    group = LimitedGroup(f"startup-{tmp_path.name[-12:]}")
    argv = group.wrap(
        [
            sys.executable, "-m", "sidecar", "serve", "--libvirt-uri", "test:///default", "--domain", "test",
            "--listen", f"127.0.0.1:{free_port()}", "--hook-socket-dir", str(hooks),
            "--pod-annotations", str(tmp_path / "annotations"),
        ]
    )  # fmt: skip
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        socket = hooks / SOCKET_NAME
        # virt-launcher's poll, finer than its 300 ms
        wait_for(socket.exists, timeout=60, interval=0.02, what=f"the hook socket {socket}", proc=proc)
        appeared = time.monotonic() - started
        with grpc.insecure_channel(f"unix://{socket}") as channel:
            info = hook_info_pb2_grpc.InfoStub(channel).Info(hook_info_pb2.InfoParams(), timeout=1.0)
        assert info.name == "bridge-migration"
        print(f"\nunder 200m: hook socket after {appeared:.2f} s, Info answered within 1 s")
        assert group.cpu_counters().quota_us == 20_000
        assert group.memory_counters().failcnt == 0
    finally:
        stop(proc, grace=30)
        group.remove()
