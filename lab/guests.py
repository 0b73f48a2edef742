"""The lab's guest types: what boots, with how much memory, and what the guest calls its NICs.

``busybox`` (the default, the fast lane): the cached Debian cloud kernel and a busybox initramfs
whose init runs udhcpc itself (lab/guest/), and no guest agent. ``debian-networkd``: a Debian 12
minbase with systemd, udev, systemd-networkd and qemu-guest-agent in their stock behaviour
(lab/guest-debian/, built by scripts/build-guest-debian.sh), on a read-only ext4 disk that the
source and the target QEMU of a migration share, with a tmpfs overlay for the guest's writes.
``debian-nm``: the same with NetworkManager (its internal DHCP client, its default wired
profiles) instead of networkd (scripts/build-guest-debian.sh nm). Every domain has KubeVirt's
guest-agent channel (lab/domain.py): the Debian guests' agent answers on it, the busybox guest
leaves it unconnected. All write the same ``LAB <uptime> <event> ...`` lines to the serial
console (lab/console.py).
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, get_args

from bridge_migration_contract import domain_alias
from lab.paths import DEBIAN_GUEST, DEBIAN_NM_GUEST, GUEST_INITRD, GUEST_KERNEL

GuestType = Literal["busybox", "debian-networkd", "debian-nm"]
GUEST_TYPES: Final[tuple[GuestType, ...]] = get_args(GuestType)
DEFAULT_GUEST: Final[GuestType] = "busybox"


@dataclass(frozen=True)
class GuestImage:
    """What a domain of one guest type boots: resolved paths, so a running VM keeps its build."""

    kind: GuestType
    kernel: Path
    initrd: Path
    root_disk: Path | None  # attached read-only as vda
    memory_mib: int

    def cmdline(self, *, name: str, ping: str | None) -> str:
        words = ["console=ttyS0", "quiet", "panic=-1", f"lab.name={name}"]
        if ping:
            words.append(f"lab.ping={ping}")
        if self.kind != "busybox":
            # systemd takes both from the command line: the image's /etc/machine-id is empty, and
            # two VMs from one image must not share a machine id (networkd's DHCP client id is
            # derived from it, NetworkManager's DUID and stable IDs too).
            machine_id = hashlib.sha256(name.encode()).hexdigest()[:32]
            words += [f"systemd.hostname={name}", f"systemd.machine_id={machine_id}"]
        return " ".join(words)

    def nic_name(self, domain_xml: str, interface: str, index: int) -> str:
        """The name the guest gives the NIC of VMI interface ``interface`` (``index``-th)."""
        if self.kind == "busybox":
            return f"eth{index}"  # the kernel's names, in probe order: the busybox init renames nothing
        # udev's predictable name for a NIC in a hot-pluggable slot of QEMU's i440fx machine:
        # ens<slot> (ID_NET_NAME_SLOT). libvirt gives the slot; a reattach keeps it.
        root = ET.fromstring(domain_xml)
        for iface in root.iter("interface"):
            alias = iface.find("alias")
            address = iface.find("address")
            if alias is not None and alias.get("name") == domain_alias(interface) and address is not None:
                return f"ens{int(address.get('slot', '0'), 16)}"
        raise LookupError(f"no PCI address for interface {interface} in the domain")


def guest_image(kind: GuestType) -> GuestImage:
    """The cached build of guest type ``kind``; fails with how to build it when it is missing."""
    if not GUEST_KERNEL.exists():
        raise RuntimeError("guest kernel missing: run ./scripts/install-lab.sh")
    if kind == "busybox":
        if not GUEST_INITRD.exists():
            raise RuntimeError("busybox initramfs missing: run ./scripts/install-lab.sh")
        return GuestImage(kind, GUEST_KERNEL.resolve(), GUEST_INITRD.resolve(), None, 128)
    if kind in DEBIAN_BUILDS:
        build, flavour, memory_mib = DEBIAN_BUILDS[kind]
        initrd, disk = build / "initrd.cpio.gz", build / "root.img"
        if not initrd.exists() or not disk.exists():
            raise RuntimeError(
                f"Debian guest {kind} missing: run ./scripts/install-lab.sh"
                f" (or scripts/build-guest-debian.sh {flavour})"
            )
        return GuestImage(kind, GUEST_KERNEL.resolve(), initrd.resolve(), disk.resolve(), memory_mib)
    raise ValueError(f"unknown guest type {kind!r}; one of {', '.join(GUEST_TYPES)}")


DEBIAN_MEMORY_MIB: Final = 160
DEBIAN_NM_MEMORY_MIB: Final = 160
# Guest type -> (build directory, scripts/build-guest-debian.sh flavour, memory).
DEBIAN_BUILDS: Final[dict[GuestType, tuple[Path, str, int]]] = {
    "debian-networkd": (DEBIAN_GUEST, "networkd", DEBIAN_MEMORY_MIB),
    "debian-nm": (DEBIAN_NM_GUEST, "nm", DEBIAN_NM_MEMORY_MIB),
}
