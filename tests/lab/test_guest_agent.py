"""The guest agent in the lab: KubeVirt's agent channel on every domain (facts R9), Debian's own
qemu-guest-agent in the Debian guests, none in the busybox guest.

What the fixer will ask (issue 23) is asked here the same way: libvirt's
``interfaceAddresses(VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT)`` on the pod's own connection. No
sidecar runs: after the migration the guest has no reason to renew, so the agent on the target
still shows the source pod's address, which is what the fixer sees of a guest that did not renew.
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import libvirt
import pytest

from lab.cluster import Lab, Vm
from lab.domain import Nic, domain_xml
from lab.guests import GuestImage, GuestType
from lab.process import wait_for

AGENT = libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT
BOOT_TIMEOUT = 180.0  # a Debian guest's first lease: 15 to 30 s idle, far more beside other labs


class AgentNotYetError(Exception):
    """The agent has not answered yet, or has not listed the address yet."""


def _agent_channel(xml: str) -> tuple[ET.Element | None, ET.Element]:
    """(source, target) of the domain's one unix channel."""
    (channel,) = [c for c in ET.fromstring(xml).iter("channel") if c.get("type") == "unix"]
    target = channel.find("target")
    assert target is not None
    return channel.find("source"), target


def _agent_ipv4(vm: Vm) -> tuple[str, list[str]]:
    """(hwaddr, IPv4 addresses) of the guest NIC with the domain's MAC, as the agent lists it."""
    try:
        listing: dict[str, Any] = vm.domain().interfaceAddresses(AGENT, 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_AGENT_UNRESPONSIVE:  # not started yet
            raise AgentNotYetError(str(exc)) from exc
        raise
    mac = vm.domain_mac()
    nics = [v for v in listing.values() if v["hwaddr"] == mac]
    if not nics:
        raise AgentNotYetError(f"no NIC with {mac} in {listing}")
    (nic,) = nics
    v4 = [a["addr"] for a in nic["addrs"] or [] if a["type"] == libvirt.VIR_IP_ADDR_TYPE_IPV4]
    return nic["hwaddr"], v4


def _wait_agent_lists(vm: Vm, address: str, *, timeout: float) -> str:
    def listed() -> str:
        hwaddr, v4 = _agent_ipv4(vm)
        if address not in v4:
            raise AgentNotYetError(f"{hwaddr} has {v4}, not {address}")
        return hwaddr

    return wait_for(
        listed, timeout=timeout, interval=0.2, what=f"the agent to list {address}", ignore=(AgentNotYetError,)
    )


def test_every_domain_gets_kubevirts_agent_channel_with_no_source_path() -> None:
    guest = GuestImage("busybox", Path("/k/vmlinuz"), Path("/k/initramfs.cpio.gz"), None, 128)
    nics = [Nic("default", "02:00:00:00:00:01", "tap0")]
    xml = domain_xml(name="ns1_vm1", nics=nics, console=Path("/c"), cmdline="console=ttyS0", guest=guest)
    source, target = _agent_channel(xml)
    assert source is None  # libvirt picks the socket path, on each side of a migration
    assert (target.get("type"), target.get("name")) == ("virtio", "org.qemu.guest_agent.0")


@pytest.mark.lab
@pytest.mark.parametrize("guest", ["debian-networkd", "debian-nm"])
def test_debians_agent_lists_the_leased_address_by_the_domains_mac_before_and_after_migration(
    guest: GuestType,
) -> None:
    with Lab(guest=guest) as lab:
        lab.add_nodes("a", "b")
        vm = lab.start_vm(name="agent", node="a", sidecar=False)
        ack = vm.console.wait("dhcp-ack", nic=vm.guest_nic(), timeout=BOOT_TIMEOUT)
        leased = str(ipaddress.IPv4Interface(ack.fields["ip"]).ip)
        assert leased == vm.pod.ip
        assert _wait_agent_lists(vm, leased, timeout=60) == vm.domain_mac() == ack.fields["mac"]
        assert _agent_channel(vm.domain().XMLDesc(0))[1].get("state") == "connected"

        record = lab.migrate(vm, to_node="b")
        assert vm.pod.name == record.target_pod  # vm.domain() now asks the target pod's daemon
        source, target = _agent_channel(vm.domain().XMLDesc(0))
        # The target's daemon made its own socket for the channel (the XML that came had no path).
        assert source is not None and (source.get("path") or "").endswith("/org.qemu.guest_agent.0")
        # No fixer: the guest kept the source pod's lease, and the agent on the target says so.
        assert _wait_agent_lists(vm, leased, timeout=30) == vm.domain_mac()
        assert target.get("state") == "connected"
        assert vm.pod.ip not in _agent_ipv4(vm)[1]


@pytest.mark.lab
def test_the_busybox_guest_has_no_agent_and_libvirt_says_it_is_not_connected(lab: Lab) -> None:
    vm = lab.start_vm(name="noagent", node="a", sidecar=False)
    vm.console.wait("dhcp-ack", nic=vm.guest_nic(), timeout=60)  # the guest is up: there is just no agent
    with pytest.raises(libvirt.libvirtError) as raised:
        vm.domain().interfaceAddresses(AGENT, 0)
    assert raised.value.get_error_code() == libvirt.VIR_ERR_AGENT_UNRESPONSIVE
    assert raised.value.get_error_domain() == libvirt.VIR_FROM_QEMU
    assert "not connected" in str(raised.value)
    assert _agent_channel(vm.domain().XMLDesc(0))[1].get("state") == "disconnected"
