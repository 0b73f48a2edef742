"""One libvirt daemon per lab pod, as every virt-launcher pod runs its own.

The daemon lives in the pod's network namespace (so QEMU opens the pod's ``tap0``) and in a
private mount namespace where its own directories are bind-mounted over /etc/libvirt,
/run/libvirt, /var/lib/libvirt and /var/log/libvirt. Its socket sits in the lab run
directory, reachable from every namespace (a unix socket crosses network namespaces).
"""

from __future__ import annotations

import os
import shlex
import uuid
from pathlib import Path
from typing import Any

import libvirt

from lab.paths import LIBVIRT_CACHE
from lab.process import LabProcess, wait_for
from lab.shell import in_netns, run

_QEMU_CONF = """\
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
stdio_handler = "file"
cgroup_controllers = [ ]
namespaces = [ ]
"""

_BIND_TARGETS = {
    "etc": "/etc/libvirt",
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "log": "/var/log/libvirt",
}


class LibvirtDaemon:
    """libvirtd for one pod; ``uri`` is what the sidecar and the lab connect to."""

    def __init__(self, *, netns: str, run_dir: Path) -> None:
        self.netns = netns
        self.run_dir = run_dir
        self.sock_dir = run_dir / "sock"
        self.host_uuid = str(uuid.uuid4())  # distinct per daemon, or migration sees "the same host"
        self.process: LabProcess | None = None
        # Non-root clients (uid -> user name): the socket is theirs, as the launcher's socket is its
        # user's in a pod, and the daemon can look them up (libvirtd refuses a client uid it cannot).
        self.client_users: dict[int, str] = {}

    @property
    def socket(self) -> Path:
        return self.sock_dir / "libvirt-sock"

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.socket}"

    def _write_config(self) -> None:
        for sub in (*_BIND_TARGETS, "sock"):
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
        (LIBVIRT_CACHE / "qemu").mkdir(parents=True, exist_ok=True)
        for target in _BIND_TARGETS.values():
            Path(target).mkdir(parents=True, exist_ok=True)  # a bind mount needs its mount point
        etc = self.run_dir / "etc"
        (etc / "qemu.conf").write_text(_QEMU_CONF)
        (etc / "libvirtd.conf").write_text(
            f'unix_sock_dir = "{self.sock_dir}"\n'
            'auth_unix_rw = "none"\n'
            'auth_unix_ro = "none"\n'
            f'host_uuid = "{self.host_uuid}"\n'
            f'log_outputs = "3:file:{self.run_dir / "libvirtd.log"}"\n'
        )

    def start(self, *, timeout: float = 60.0) -> None:
        self._write_config()
        mounts = " && ".join(
            f"mount --bind {shlex.quote(str(self.run_dir / src))} {dst}" for src, dst in _BIND_TARGETS.items()
        )
        script = (
            f"{mounts} && exec libvirtd -f /etc/libvirt/libvirtd.conf"
            f" -p {shlex.quote(str(self.run_dir / 'libvirtd.pid'))}"
        )
        argv = in_netns(self.netns, ["unshare", "-m", "--propagation", "private", "sh", "-c", script])
        self.process = LabProcess(name=f"libvirtd {self.netns}", argv=argv, log_path=self.run_dir / "libvirtd.stdout")
        process = self.process

        def ready() -> bool:
            if not process.alive():
                raise RuntimeError(f"libvirtd in {self.netns} exited:\n{process.log_tail()}")
            return self.socket.exists()

        wait_for(ready, timeout=timeout, what=f"libvirtd socket {self.socket}")
        self._admit_client_users()

    def admit_user(self, uid: int, name: str) -> None:
        """Let a non-root ``uid`` use this daemon, now and after every restart."""
        self.client_users[uid] = name
        if self.process is not None and self.process.alive():
            self._admit_client_users()

    def _admit_client_users(self) -> None:
        if not self.client_users:
            return
        etc = self.run_dir / "client-users"
        etc.mkdir(exist_ok=True)
        users = self.client_users.items()
        passwd = "".join(f"{name}:x:{uid}:{uid}::/nonexistent:/usr/sbin/nologin\n" for uid, name in users)
        group = "".join(f"{name}:x:{uid}:\n" for uid, name in users)
        (etc / "passwd").write_text(Path("/etc/passwd").read_text() + passwd)
        (etc / "group").write_text(Path("/etc/group").read_text() + group)
        pid = (self.run_dir / "libvirtd.pid").read_text().strip()
        for name in ("passwd", "group"):
            run(["nsenter", "-t", pid, "-m", "mount", "--bind", str(etc / name), f"/etc/{name}"])
        owner = next(iter(self.client_users))  # one socket, one owner: the first user admitted
        os.chown(self.socket, owner, owner)

    def connect(self) -> Any:
        """A new connection (the first one on a fresh cache probes QEMU: seconds)."""
        return libvirt.open(self.uri)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
