"""One libvirt daemon per lab pod, as every virt-launcher pod runs its own.

The daemon lives in the pod's network namespace (so QEMU opens the pod's ``tap0``) and in a
private mount namespace. Two modes, as KubeVirt has two kinds of launcher (facts L1, L4):

- ``session`` (the default, KubeVirt's default non-root launcher): the daemon and QEMU run as
  uid/gid 107 in libvirt's session mode with ``XDG_RUNTIME_DIR=/var/run``, so the socket is
  ``/var/run/libvirt/...`` inside the pod, and clients use KubeVirt's own URI
  ``qemu+unix:///session?socket=/var/run/libvirt/virtqemud-sock``. Debian 12's libvirt 9.0 has
  no modular ``virtqemud``; its monolithic ``libvirtd`` in session mode serves the same QEMU
  driver on ``libvirt-sock``, and ``virtqemud-sock`` is a hard link to it. The pod's
  ``libvirt-runtime`` directory is ``<run dir>/runtime``, bind-mounted over /var/run/libvirt.
- ``system``: the root launcher's ``qemu:///system``, with the daemon's own directories
  bind-mounted over /etc/libvirt, /run/libvirt, /var/lib/libvirt and /var/log/libvirt.

Either way the socket also sits under the lab run directory, reachable from every namespace
(a unix socket crosses network namespaces), which is how the lab itself connects.
"""

from __future__ import annotations

import os
import shlex
import stat
import uuid
from pathlib import Path
from typing import Any, Final, Literal

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

# Session mode: no user/group (QEMU runs as the daemon's user), the rest as above.
_SESSION_QEMU_CONF = """\
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
stdio_handler = "file"
namespaces = [ ]
"""

LAUNCHER_UID: Final = 107  # KubeVirt's non-root launcher user (qemu), pkg/util NonRootUID
SOCKET_NAME: Final = "virtqemud-sock"  # what KubeVirt's URI names
# The session daemon's XDG_CONFIG_HOME, where KubeVirt's non-root launcher has it. The path is not
# cosmetic: libvirt puts the guest-agent channel's socket under it (<it>/libvirt/qemu/channel/
# target/domain-<id>-<first 20 chars of the name>/org.qemu.guest_agent.0), and a unix socket path
# has at most 107 bytes; a longer directory fails to start a domain with a long name.
PRIVATE_DIR: Final = "/var/run/kubevirt-private"
LibvirtMode = Literal["session", "system"]
# Shared by every session daemon, so only the first pays for the QEMU capability probe (as
# /var/cache/libvirt is for system daemons); KubeVirt keeps it in the pod's private dir.
SESSION_CACHE: Final = LIBVIRT_CACHE.parent / "bridge-migration" / "libvirt-session-cache"

_BIND_TARGETS = {
    "etc": "/etc/libvirt",
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "log": "/var/log/libvirt",
}


class LibvirtDaemon:
    """libvirtd for one pod; ``uri`` is what the sidecar and the lab connect to."""

    def __init__(self, *, netns: str, run_dir: Path, mode: LibvirtMode = "session") -> None:
        self.netns = netns
        self.run_dir = run_dir
        self.mode: LibvirtMode = mode
        # The pod's libvirt-runtime emptyDir in session mode; the socket directory in system mode.
        self.sock_dir = run_dir / ("runtime" if mode == "session" else "sock")
        self.host_uuid = str(uuid.uuid4())  # distinct per daemon, or migration sees "the same host"
        self.process: LabProcess | None = None
        # Non-root clients (uid -> user name): the socket is theirs, as the launcher's socket is its
        # user's in a pod, and the daemon can look them up (libvirtd refuses a client uid it cannot).
        self.client_users: dict[int, str] = {}

    @property
    def socket(self) -> Path:
        """The path clients connect to (in session mode KubeVirt's name, a hard link)."""
        return self.sock_dir / (SOCKET_NAME if self.mode == "session" else "libvirt-sock")

    @property
    def listen_socket(self) -> Path:
        """The socket file the daemon itself creates."""
        return self.sock_dir / "libvirt-sock"

    @property
    def runtime_dir(self) -> Path | None:
        """The pod's ``libvirt-runtime`` directory (mounted at /var/run/libvirt), session mode only."""
        return self.sock_dir if self.mode == "session" else None

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "libvirtd.pid"

    @property
    def uri(self) -> str:
        return f"qemu+unix:///{self.mode}?socket={self.socket}"

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

    def _session_script(self) -> str:
        """Prepare the pod's session daemon; the shell line that starts it as uid 107."""
        uid = LAUNCHER_UID
        private = self.run_dir / "private"  # bind-mounted at PRIVATE_DIR in the daemon's mount namespace
        etc = self.run_dir / "etc"
        for d in (self.sock_dir, private / "libvirt", etc, SESSION_CACHE):
            d.mkdir(parents=True, exist_ok=True)
        for point in ("/run/libvirt", PRIVATE_DIR):  # the bind mounts' mount points
            Path(point).mkdir(parents=True, exist_ok=True)
        (private / "libvirt" / "qemu.conf").write_text(_SESSION_QEMU_CONF)
        (private / "libvirt" / "libvirtd.conf").write_text(
            f'host_uuid = "{self.host_uuid}"\nlog_outputs = "3:file:{self.run_dir / "libvirtd.log"}"\n'
        )
        # libvirtd looks its own user up; a launcher image has a passwd entry for 107.
        (etc / "passwd").write_text(
            Path("/etc/passwd").read_text() + f"qemu:x:{uid}:{uid}::{PRIVATE_DIR}:/usr/sbin/nologin\n"
        )
        (etc / "group").write_text(Path("/etc/group").read_text() + f"qemu:x:{uid}:\n")
        # The compute container gets /dev/net/tun from KubeVirt's device plugin; this machine's
        # node is root-only, so the daemon's mount namespace gets an open one of its own.
        tun = self.run_dir / "dev-net-tun"
        if not tun.exists():
            os.mknod(tun, 0o666 | stat.S_IFCHR, os.makedev(10, 200))
            os.chmod(tun, 0o666)
        for d in (self.run_dir, self.sock_dir, private, private / "libvirt", SESSION_CACHE):
            os.chown(d, uid, uid)
        env = {
            "HOME": PRIVATE_DIR,
            "XDG_RUNTIME_DIR": "/var/run",
            "XDG_CONFIG_HOME": PRIVATE_DIR,
            "XDG_CACHE_HOME": str(SESSION_CACHE),
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        }
        q = shlex.quote
        mounts = [
            f"mount --bind {q(str(self.sock_dir))} /run/libvirt",
            f"mount --bind {q(str(private))} {PRIVATE_DIR}",
            f"mount --bind {q(str(tun))} /dev/net/tun",
            f"mount --bind {q(str(etc / 'passwd'))} /etc/passwd",
            f"mount --bind {q(str(etc / 'group'))} /etc/group",
        ]
        setpriv = f"setpriv --reuid={uid} --regid={uid} --clear-groups"
        envs = " ".join(f"{k}={q(v)}" for k, v in env.items())
        conf = q(str(private / "libvirt" / "libvirtd.conf"))
        return " && ".join(mounts) + f" && exec {setpriv} env -i {envs} libvirtd -f {conf} -p {q(str(self.pid_file))}"

    def _system_script(self) -> str:
        self._write_config()
        mounts = " && ".join(
            f"mount --bind {shlex.quote(str(self.run_dir / src))} {dst}" for src, dst in _BIND_TARGETS.items()
        )
        return f"{mounts} && exec libvirtd -f /etc/libvirt/libvirtd.conf -p {shlex.quote(str(self.pid_file))}"

    def start(self, *, timeout: float = 60.0) -> None:
        # A daemon that died leaves its socket file, which would pass the readiness check.
        self.listen_socket.unlink(missing_ok=True)
        script = self._session_script() if self.mode == "session" else self._system_script()
        argv = in_netns(self.netns, ["unshare", "-m", "--propagation", "private", "sh", "-c", script])
        self.process = LabProcess(name=f"libvirtd {self.netns}", argv=argv, log_path=self.run_dir / "libvirtd.stdout")
        process = self.process

        def ready() -> bool:
            if not process.alive():
                raise RuntimeError(f"libvirtd in {self.netns} exited:\n{process.log_tail()}")
            return self.listen_socket.exists()

        wait_for(ready, timeout=timeout, what=f"libvirtd socket {self.listen_socket}")
        if self.socket != self.listen_socket:
            # A hard link, not a symlink: KubeVirt's virtqemud-sock is a socket itself, owned by the
            # launcher user, and the node agent accepts nothing else (facts P8). Made anew at every
            # start, since a restarted daemon listens on a new inode.
            self.socket.unlink(missing_ok=True)
            os.link(self.listen_socket, self.socket)
        self._admit_client_users()

    def admit_user(self, uid: int, name: str) -> None:
        """Let a non-root ``uid`` use this daemon, now and after every restart."""
        self.client_users[uid] = name
        if self.process is not None and self.process.alive():
            self._admit_client_users()

    def _admit_client_users(self) -> None:
        # A session daemon is its user's already: the launcher user needs nothing more.
        if not self.client_users or (set(self.client_users) == {LAUNCHER_UID} and self.mode == "session"):
            return
        etc = self.run_dir / "client-users"
        etc.mkdir(exist_ok=True)
        users = self.client_users.items()
        passwd = "".join(f"{name}:x:{uid}:{uid}::/nonexistent:/usr/sbin/nologin\n" for uid, name in users)
        group = "".join(f"{name}:x:{uid}:\n" for uid, name in users)
        (etc / "passwd").write_text(Path("/etc/passwd").read_text() + passwd)
        (etc / "group").write_text(Path("/etc/group").read_text() + group)
        pid = self.pid_file.read_text().strip()
        for name in ("passwd", "group"):
            run(["nsenter", "-t", pid, "-m", "mount", "--bind", str(etc / name), f"/etc/{name}"])
        owner = next(iter(self.client_users))  # one socket, one owner: the first user admitted
        os.chown(self.listen_socket, owner, owner)

    def connect(self) -> Any:
        """A new connection (the first one on a fresh cache probes QEMU: seconds)."""
        return libvirt.open(self.uri)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
