"""Working inside a launcher pod's network namespace from the node agent: no dependency, no subprocess.

The pod is found through the process serving a unix socket (SO_PEERCRED), its namespace through
/proc/<pid>/ns/net, opened only when needed and closed at once: an open namespace descriptor keeps
the namespace alive, and holding one of a pod that has ended would keep its links (and a stale
macvtap's claim on a MAC) alive with it.

Network namespaces are per thread: the work runs on a new thread that enters the namespace and
then ends. No thread that switched namespace is ever reused, so nothing else of the agent can run
in a pod's namespace by accident.

What it takes, and why:
- hostPID: SO_PEERCRED gives the peer's pid in the agent's pid namespace; only in the host's is
  that a pid the agent can find under /proc (without hostPID it is 0 and the work is refused).
- CAP_SYS_PTRACE: /proc/<pid>/ns/net of a process of another user (virtqemud runs as uid 107)
  opens only for a caller allowed to inspect that process.
- CAP_SYS_ADMIN: setns(2) into a network namespace.
- CAP_NET_ADMIN: changing a link's flags (SIOCSIFFLAGS) in that namespace. Reading a link's
  flags and driver needs no capability.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import Final, TypeVar

T = TypeVar("T")

CLONE_NEWNET: Final = 0x40000000
IFNAMSIZ: Final = 16
IFF_UP: Final = 0x1
SIOCGIFFLAGS: Final = 0x8913
SIOCSIFFLAGS: Final = 0x8914
SIOCETHTOOL: Final = 0x8946
ETHTOOL_GDRVINFO: Final = 0x3
# struct ethtool_drvinfo: cmd, then driver[32], version[32], fw_version[32], bus_info[32],
# erom_version[32], reserved2[12], then five u32 counts.
_DRVINFO_SIZE: Final = 4 + 5 * 32 + 12 + 5 * 4
_DRIVER_OFFSET: Final = 4
# struct ifreq: the name, then a union whose largest member (struct ifmap) makes it 40 bytes on
# 64-bit Linux.
_IFREQ_SIZE: Final = 40

_libc = ctypes.CDLL(None, use_errno=True)


def peer_pid(address: str, *, timeout: float = 2.0) -> int:
    """The pid of the process that listens on the unix socket ``address`` (SO_PEERCRED).

    The connection is closed at once; the server sees a client that says nothing. Raises OSError."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(address)
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid: int = struct.unpack("3i", creds)[0]
    if pid <= 0:
        raise OSError(errno.ESRCH, f"the process serving {address} is outside this pid namespace (no hostPID?)")
    return pid


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _open_foreign_netns(pid: int) -> int:
    """An fd of the network namespace of ``pid``; refused when it is the agent's own or the node's
    (pid 1's): a pod's links are the only ones this module may touch."""
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) in {_identity("/proc/self/ns/net"), _identity("/proc/1/ns/net")}:
        os.close(fd)
        raise PermissionError(errno.EPERM, f"pid {pid} is in the agent's or the node's network namespace")
    return fd


def run_in_netns(pid: int, work: Callable[[], T], *, timeout: float = 5.0) -> T:
    """``work()`` on a new thread inside the network namespace of ``pid``; its result or exception.

    Raises OSError when the namespace cannot be entered, TimeoutError when the work takes longer
    than ``timeout`` (the thread then ends on its own)."""
    fd = _open_foreign_netns(pid)
    outcome: list[T] = []
    failure: list[BaseException] = []

    def enter_and_work() -> None:
        try:
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, f"setns into the network namespace of pid {pid}: {os.strerror(code)}")
            finally:
                os.close(fd)  # entered or not, the descriptor is not kept
            outcome.append(work())
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=enter_and_work, name=f"netns-{pid}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"work in the network namespace of pid {pid} took more than {timeout:g} s")
    if failure:
        raise failure[0]
    return outcome[0]


def _ifreq_name(name: str) -> bytes:
    raw = os.fsencode(name)
    if not raw or len(raw) >= IFNAMSIZ or b"/" in raw or b"\0" in raw:
        raise ValueError(f"{name!r} is not a link name")
    return raw


def link_driver(sock: socket.socket, name: str) -> str:
    """The driver ethtool reports for link ``name`` in ``sock``'s namespace ("macvlan" for a
    macvlan and for a macvtap, "veth", "tun", ...). OSError ENODEV when there is no such link."""
    info = ctypes.create_string_buffer(struct.pack("I", ETHTOOL_GDRVINFO), _DRVINFO_SIZE)
    request = struct.pack("16sP", _ifreq_name(name), ctypes.addressof(info)).ljust(_IFREQ_SIZE, b"\0")
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, request)  # the kernel fills ``info`` through the pointer
    return info.raw[_DRIVER_OFFSET : _DRIVER_OFFSET + 32].split(b"\0", 1)[0].decode("ascii", "replace")


def link_flags(sock: socket.socket, name: str) -> int:
    request = struct.pack("16sH", _ifreq_name(name), 0).ljust(_IFREQ_SIZE, b"\0")
    answer = fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request)
    flags: int = struct.unpack_from("H", answer, IFNAMSIZ)[0]
    return flags


def set_link_flags(sock: socket.socket, name: str, flags: int) -> None:
    fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sH", _ifreq_name(name), flags).ljust(_IFREQ_SIZE, b"\0"))
