"""Domain XML of a lab guest, shaped like what virt-launcher defines for bridge binding.

Direct kernel boot of the cached Debian cloud kernel and the guest type's initramfs (and,
for the Debian guest, its root image as a read-only virtio disk), TCG (the machines have no
usable KVM), the guest type's memory, one virtio NIC per pod tap with the alias
virt-launcher would give it (``ua-<interface name>``), the serial console appended to a
file the host tails (``append='on'`` so the migration target keeps writing the same file), and
the guest-agent channel KubeVirt gives every domain (the Debian guests run qemu-guest-agent on
it; the busybox guest has no agent, so libvirt finds nothing at its end).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final
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


# KubeVirt's guest-agent channel, on every domain whatever the VMI says (facts R9): a unix channel
# with no <source>, so each libvirt daemon picks the socket path itself (and leaves its own out of
# the XML it migrates, so the target picks again), and a virtio port named org.qemu.guest_agent.0
# in the guest. A session daemon's path is <XDG_CONFIG_HOME>/libvirt/qemu/channel/target/
# domain-<id>-<first 20 characters of the name>/org.qemu.guest_agent.0, and a unix socket path
# has at most 107 bytes: the daemon's XDG_CONFIG_HOME has to be as short as KubeVirt's
# /var/run/kubevirt-private (lab/libvirtd.py) or a domain with a long name fails to start.
GUEST_AGENT_CHANNEL_XML: Final = "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>"


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
    {GUEST_AGENT_CHANNEL_XML}
    <serial type='file'>
      <source path={quoteattr(str(console))} append='on'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
"""
