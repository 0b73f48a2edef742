"""The pod side of each NIC, read from sysfs in the network namespace we run in.

In a virt-launcher pod with bridge binding the CNI's interface is renamed `eth0-nic`, the
in-pod bridge is `k6t-eth0`, the tap is `tap0`, and a dummy `eth0` keeps the CNI's MAC and
IP. The sidecar shares the pod's network namespace, and the container runtime mounts /sys in
that namespace, so `/sys/class/net` lists exactly the pod's links.

sysfs rather than netlink (pyroute2): name, MAC and operstate are plain files there, and
pyroute2's import alone costs ~9.5 MiB of RSS, a sixth of the 64M a hook sidecar may use.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SYS_CLASS_NET = Path("/sys/class/net")


@dataclass(frozen=True)
class PodLink:
    name: str
    mac: str | None
    operstate: str  # as netlink spells it: UP, DOWN, UNKNOWN, ...
    kind: str | None  # "bridge", "tun", "veth", ... when sysfs tells; None otherwise


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _kind(link: Path) -> str | None:
    if (link / "bridge").is_dir():
        return "bridge"
    if (link / "tun_flags").exists():
        return "tun"
    uevent = _read(link / "uevent") or ""
    for line in uevent.splitlines():
        key, _, value = line.partition("=")
        if key == "DEVTYPE" and value:
            return value
    return None


def read_links(root: Path = SYS_CLASS_NET) -> dict[str, PodLink]:
    """Every link of this network namespace by name; empty when sysfs cannot be read."""
    out: dict[str, PodLink] = {}
    try:
        entries = sorted(root.iterdir())
    except OSError as exc:
        log.warning("cannot read pod links from %s: %s", root, exc)
        return out
    for link in entries:
        mac = _read(link / "address")
        operstate = _read(link / "operstate")
        if operstate is None:
            continue  # gone between the listing and the read
        out[link.name] = PodLink(
            name=link.name,
            mac=mac.lower() if mac else None,
            operstate=operstate.upper(),
            kind=_kind(link),
        )
    return out


def pod_macs(links: dict[str, PodLink]) -> dict[str, str]:
    return {name: link.mac for name, link in links.items() if link.mac}


_SIOCGIFADDR = 0x8915  # linux/sockios.h


def has_ipv4(name: str) -> bool | None:
    """Whether link ``name`` of this namespace holds an IPv4 address; None when it cannot be told.

    For a bridge binding the dummy that keeps the pod interface's name also keeps the CNI's
    addresses and is never set up (docs/kubevirt-facts.md M1), and virt-launcher serves DHCP on
    that network only when there was an IPv4 address (M2). sysfs has no addresses; one ioctl on
    a UDP socket answers for a down link too, where netlink would mean pyroute2 (see above)."""
    packed = struct.pack("256s", name.encode()[:15])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, packed)
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                return False
            return None  # no such link (ENODEV) or not allowed: no evidence either way
    return True


def ipv4_of(name: str) -> str | None:
    """The IPv4 address link ``name`` of this namespace holds (None: none), or ``"unknown"``.

    The dummy that keeps the pod interface's name keeps its address too (facts D7, M1): the one
    KubeVirt's DHCP server hands the guest, so the one the closed loop expects the guest to hold."""
    packed = struct.pack("256s", name.encode()[:15])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            answer = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, packed)
        except OSError as exc:
            return None if exc.errno == errno.EADDRNOTAVAIL else "unknown"
    # struct ifreq: 16 bytes of name, then a sockaddr_in (family, port, 4 address bytes).
    return socket.inet_ntoa(answer[20:24])


def ipv4_less(names: Iterable[str]) -> frozenset[str]:
    """The links among ``names`` known to hold no IPv4 address."""
    return frozenset(n for n in names if has_ipv4(n) is False)
