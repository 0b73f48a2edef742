"""Domain XML of a lab guest, shaped like what virt-launcher defines for bridge binding.

Direct kernel boot of the cached Debian cloud kernel and the guest type's initramfs (and,
for the Debian guest, its root image as a read-only virtio disk), TCG (the machines have no
usable KVM), the guest type's memory, one virtio NIC per pod tap with the alias
virt-launcher would give it (``ua-<interface name>``), and the serial console appended to a
file the host tails (``append='on'`` so the migration target keeps writing the same file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

from bridge_migration_contract import domain_alias
from lab.guests import GuestImage


@dataclass(frozen=True)
class Nic:
    """One guest NIC: the VMI interface name, its MAC and the pod tap it plugs into."""

    name: str
    mac: str
    tap: str


def domain_name(namespace: str, vmi: str) -> str:
    """virt-launcher names the libvirt domain ``<namespace>_<vmi>``."""
    return f"{namespace}_{vmi}"


def interface_xml(nic: Nic) -> str:
    return (
        "<interface type='ethernet'>"
        f"<mac address={quoteattr(nic.mac)}/>"
        f"<target dev={quoteattr(nic.tap)} managed='no'/>"
        "<model type='virtio'/>"
        "<driver name='qemu'/>"
        f"<alias name={quoteattr(domain_alias(nic.name))}/>"
        "</interface>"
    )


def root_disk_xml(image: Path) -> str:
    """The root image, read-only: source and target QEMU of a migration on this one machine
    open the same file at once (QEMU takes a shared lock), and libvirt treats a read-only disk
    as safe to migrate without copying it."""
    return (
        "<disk type='file' device='disk'>"
        "<driver name='qemu' type='raw'/>"
        f"<source file={quoteattr(str(image))}/>"
        "<target dev='vda' bus='virtio'/>"
        "<readonly/>"
        "</disk>"
    )


def domain_xml(*, name: str, nics: list[Nic], console: Path, cmdline: str, guest: GuestImage) -> str:
    interfaces = "".join(interface_xml(nic) for nic in nics)
    disk = root_disk_xml(guest.root_disk) if guest.root_disk is not None else ""
    memory_mib = guest.memory_mib
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{guest.kernel}</kernel>
    <initrd>{guest.initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  <cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    {interfaces}
    {disk}
    <serial type='file'>
      <source path={quoteattr(str(console))} append='on'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
"""
