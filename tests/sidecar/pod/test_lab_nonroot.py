"""The sidecar needs neither root nor any capability: shown on the lab.

`python -m sidecar serve` runs as uid/gid 107 (the qemu user KubeVirt runs non-root
virt-launcher pods as), with no supplementary groups, every capability set emptied (permitted,
effective, inheritable, ambient, bounding) and no_new_privs, inside a lab pod's network
namespace. The only thing it is given is what a pod gives the sidecar: the libvirt socket
(here chowned to that uid, as the `libvirt-runtime` emptyDir is the launcher's own), its
hook directory and its annotations file, and what the image has: a passwd entry for uid 107
(libvirtd refuses a client whose uid it cannot look up; the lab's daemon gets the same
passwd file, as virtqemud in a pod runs as that user) and HOME=/nonexistent.
It then does a real reattach on a real guest and reads the pod's links from sysfs.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from lab.cluster import NIC_NAME, Lab, Vm
from lab.paths import VENV_PYTHON
from lab.process import LabProcess, wait_for
from lab.shell import CommandError, in_netns, run
from lab.sidecar import downward_api_file
from sidecar.hookapi import hook_info_pb2, hook_info_pb2_grpc
from sidecar.pod.hook_server import SOCKET_NAME
from tests.sidecar.guest import wait_guest_nic

pytestmark = pytest.mark.lab

UID = 107  # KubeVirt's non-root qemu user
LISTEN = "127.0.0.1:8187"
NEW_MAC = "02:5e:00:00:01:07"
UNPRIVILEGED = [
    "setpriv",
    f"--reuid={UID}",
    f"--regid={UID}",
    "--clear-groups",
    "--inh-caps=-all",
    "--ambient-caps=-all",
    "--bounding-set=-all",
    "--no-new-privs",
]


class NonRootSidecar:
    def __init__(self, *, vm: Vm, home: Path) -> None:
        self.vm = vm
        self.netns = vm.pod.net.netns
        self.home = home
        # The image's user (see Dockerfile): qemu, uid/gid 107, home /nonexistent.
        self.etc = home.parent / "nonroot-etc"
        self.etc.mkdir()
        (self.etc / "passwd").write_text(
            Path("/etc/passwd").read_text() + f"qemu:x:{UID}:{UID}::/nonexistent:/usr/sbin/nologin\n"
        )
        (self.etc / "group").write_text(Path("/etc/group").read_text() + f"qemu:x:{UID}:\n")
        self.hook_dir = home / "hooks"
        self.hook_dir.mkdir()
        self.annotations = home / "annotations"
        self.annotations.write_text(
            downward_api_file(
                {
                    "bridge-migration.kubevirt.io/mac-policy": "pin",
                    "bridge-migration.kubevirt.io/macs": json.dumps({NIC_NAME: NEW_MAC}),
                }
            )
        )
        for path in (home, self.hook_dir, self.annotations):
            os.chown(path, UID, UID)
        argv = [
            str(VENV_PYTHON), "-m", "sidecar", "serve",
            "--libvirt-uri", vm.pod.daemon.uri,
            "--domain", vm.domain_name,
            "--listen", LISTEN,
            "--hook-socket-dir", str(self.hook_dir),
            "--pod-annotations", str(self.annotations),
        ]  # fmt: skip
        self.process = LabProcess(
            name="non-root sidecar",
            argv=self.as_user(["env", "HOME=/nonexistent", *argv]),
            log_path=home.parent / "nonroot-sidecar.log",
        )

    def as_user(self, argv: list[str]) -> list[str]:
        """In the pod's network namespace and a private mount namespace whose /etc/passwd and
        /etc/group carry the image's qemu user (the libvirt client looks its uid up), then
        setpriv drops to that user with no capabilities and execs the command (same pid)."""
        binds = " && ".join(
            f"mount --bind {shlex.quote(str(self.etc / name))} /etc/{name}" for name in ("passwd", "group")
        )
        command = shlex.join([*UNPRIVILEGED, *argv])
        script = f"{binds} && exec {command}"
        return in_netns(self.netns, ["unshare", "-m", "--propagation", "private", "sh", "-c", script])

    def connected(self) -> bool:
        """The sidecar answers and is connected to libvirt (False while it is starting)."""
        if not self.process.alive():
            raise RuntimeError(f"the non-root sidecar exited:\n{self.process.log_tail(40)}")
        try:
            return bool(self.cli("status")["libvirtConnected"])
        except CommandError:  # not listening yet: the CLI exits 2
            return False

    def cli(self, *args: str) -> Any:
        """`python -m sidecar <args> --json` in the pod, as the same unprivileged user."""
        out = run(
            self.as_user(
                [
                    *("env", "HOME=/nonexistent", str(VENV_PYTHON), "-m", "sidecar", *args),
                    *("--url", f"http://{LISTEN}", "--json"),
                ]
            ),
            timeout=180,
        )
        return json.loads(out)

    def proc_status(self) -> dict[str, str]:
        lines = Path(f"/proc/{self.process.pid}/status").read_text().splitlines()
        return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


@pytest.fixture(scope="module")
def nonroot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NonRootSidecar]:
    with Lab() as lab:
        lab.add_nodes("a")
        vm = lab.start_vm(name="nonroot", node="a", policy="pin", sidecar=False)
        vm.console.wait("dhcp-ack", nic="eth0", timeout=180)
        # What the pod gives the sidecar: the launcher's libvirt socket is its user's.
        os.chown(vm.pod.daemon.socket, UID, UID)
        home = lab.run_dir / "nonroot"
        home.mkdir()
        sidecar = NonRootSidecar(vm=vm, home=home)
        # libvirtd names each client by looking its uid up; in a pod virtqemud runs as that very
        # user. Give the lab's daemon (its own mount namespace) the same passwd/group files.
        daemon_pid = (vm.pod.daemon.run_dir / "libvirtd.pid").read_text().strip()
        for name in ("passwd", "group"):
            run(["nsenter", "-t", daemon_pid, "-m", "mount", "--bind", str(sidecar.etc / name), f"/etc/{name}"])
        try:
            wait_for(
                sidecar.connected,
                timeout=90,
                interval=1,
                what="the non-root sidecar connected to libvirt",
            )
            yield sidecar
        finally:
            print(sidecar.process.log_tail(40))
            sidecar.process.stop()


def test_it_runs_as_uid_107_with_every_capability_set_empty(nonroot: NonRootSidecar) -> None:
    status = nonroot.proc_status()
    assert os.path.realpath(f"/proc/{nonroot.process.pid}/exe").startswith("/usr/bin/python3")
    assert status["Uid"].split() == [str(UID)] * 4  # real, effective, saved, filesystem
    assert status["Gid"].split() == [str(UID)] * 4
    assert status["Groups"] == ""
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[caps], 16) == 0, (caps, status[caps])
    assert status["NoNewPrivs"] == "1"


def test_the_hook_server_answers_info_from_the_unprivileged_process(nonroot: NonRootSidecar) -> None:
    with grpc.insecure_channel(f"unix://{nonroot.hook_dir / SOCKET_NAME}") as channel:
        info = hook_info_pb2_grpc.InfoStub(channel).Info(hook_info_pb2.InfoParams(), timeout=30)
    assert info.name == "bridge-migration"
    assert os.stat(nonroot.hook_dir / SOCKET_NAME).st_uid == UID


def test_it_reads_the_pod_links_from_sysfs_without_capabilities(nonroot: NonRootSidecar) -> None:
    status = nonroot.cli("status")
    [iface] = status["interfaces"]
    assert (iface["alias"], iface["podLink"], iface["podLinkMac"]) == ("ua-default", "eth0", nonroot.vm.pod.cni_mac)
    assert iface["podLinkState"] is not None


def test_it_does_a_real_reattach_on_the_guest(nonroot: NonRootSidecar) -> None:
    original = nonroot.vm.domain_mac()
    since = time.time()
    record = nonroot.cli("fixup", "--force")
    assert record["result"] == "unverified", record
    [iface] = record["interfaces"]
    assert (iface["action"], iface["result"], iface["oldMac"], iface["newMac"]) == (
        "reattach",
        "done",
        original,
        NEW_MAC,
    )
    assert nonroot.vm.domain_mac() == NEW_MAC
    wait_guest_nic(nonroot.vm, mac=NEW_MAC, since=since)
    # Still the same unprivileged process after the work.
    assert int(nonroot.proc_status()["CapEff"], 16) == 0
