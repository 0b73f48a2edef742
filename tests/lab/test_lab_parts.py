"""The lab's pure parts: console lines, downward-API files, domain XML, pinned MACs, timelines."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from bridge_migration_contract import normalize_mac, parse_macs
from lab.cluster import pinned_mac
from lab.console import parse_line
from lab.domain import Nic, domain_name, domain_xml
from lab.guests import GUEST_TYPES, GuestImage
from lab.sidecar import downward_api_file
from lab.timeline import Timeline
from sidecar.core.podinfo import parse_annotations_file


def test_a_console_line_from_the_guest_becomes_an_event_with_fields() -> None:
    event = parse_line("LAB 12.34 dhcp-ack eth0 ip=10.244.2.10/24 router=10.244.2.1 mac=02:aa:bb:cc:dd:ee\r", 5.0)
    assert event is not None
    assert (event.kind, event.nic, event.at) == ("dhcp-ack", "eth0", 5.0)
    assert event.fields["ip"] == "10.244.2.10/24"
    assert event.fields["mac"] == "02:aa:bb:cc:dd:ee"


def test_a_line_about_a_predictably_named_nic_of_the_debian_guest_names_the_nic() -> None:
    event = parse_line("LAB 25.90 dhcp-ack ens2 ip=10.244.2.10/24 server=169.254.75.10 event=new", 1.0)
    assert event is not None and event.nic == "ens2"
    boot = parse_line("LAB 8.31 boot name=client ping=10.244.1.10 guest=debian-networkd", 1.0)
    assert boot is not None and boot.nic is None


def test_kernel_noise_on_the_console_is_not_an_event() -> None:
    assert parse_line("[    4.244159] ACPI: \\_SB_.LNKB: Enabled at IRQ 10", 1.0) is None
    assert parse_line("LAB", 1.0) is None


def test_the_annotations_file_is_in_downward_api_format_and_the_sidecar_reads_it_back() -> None:
    text = downward_api_file({"b/macs": '{"default":"02:00:00:00:00:01"}', "a/policy": "pin"})
    assert text.splitlines() == ['a/policy="pin"', 'b/macs="{\\"default\\":\\"02:00:00:00:00:01\\"}"']
    # The sidecar reads it back to the same values (the contract between the two).
    parsed = parse_annotations_file(text)
    assert parsed["a/policy"] == "pin"
    assert parse_macs(parsed["b/macs"]) == {"default": "02:00:00:00:00:01"}


def test_a_pinned_mac_is_stable_unicast_and_locally_administered() -> None:
    mac = pinned_mac("default", "client", "default")
    assert mac == pinned_mac("default", "client", "default") == normalize_mac(mac)
    assert mac != pinned_mac("default", "server", "default")
    first = int(mac[:2], 16)
    assert first & 0x02 and not first & 0x01


def test_the_domain_looks_like_what_virt_launcher_defines_for_bridge_binding() -> None:
    xml = domain_xml(
        name=domain_name("ns1", "vm1"),
        nics=[Nic("default", "02:00:00:00:00:01", "tap0")],
        console=Path("/run/x.console"),
        cmdline="console=ttyS0",
        guest=BUSYBOX,
    )
    root = ET.fromstring(xml)
    assert root.get("type") == "qemu"  # TCG: no usable KVM on the lab machines
    assert root.findtext("name") == "ns1_vm1"
    iface = root.find("devices/interface")
    assert iface is not None and iface.get("type") == "ethernet"
    target = iface.find("target")
    assert target is not None and (target.get("dev"), target.get("managed")) == ("tap0", "no")
    alias = iface.find("alias")
    assert alias is not None and alias.get("name") == "ua-default"
    source = root.find("devices/serial/source")
    assert source is not None and source.get("append") == "on"
    assert root.find("devices/disk") is None  # busybox: everything is in the initramfs


BUSYBOX = GuestImage("busybox", Path("/k/vmlinuz"), Path("/k/initramfs.cpio.gz"), None, 128)
DEBIAN = GuestImage("debian-networkd", Path("/k/vmlinuz"), Path("/d/initrd.cpio.gz"), Path("/d/root.img"), 160)


def test_the_debian_guest_boots_its_initramfs_with_the_root_image_read_only() -> None:
    xml = domain_xml(
        name="ns1_vm1",
        nics=[Nic("default", "02:00:00:00:00:01", "tap0")],
        console=Path("/run/x.console"),
        cmdline=DEBIAN.cmdline(name="vm1", ping="10.244.1.10"),
        guest=DEBIAN,
    )
    root = ET.fromstring(xml)
    assert root.findtext("os/initrd") == "/d/initrd.cpio.gz"
    assert root.findtext("memory") == "160"
    disk = root.find("devices/disk")
    assert disk is not None and disk.find("readonly") is not None
    source = disk.find("source")
    assert source is not None and source.get("file") == "/d/root.img"
    cmdline = (root.findtext("os/cmdline") or "").split()
    assert {"lab.name=vm1", "lab.ping=10.244.1.10", "systemd.hostname=vm1"} <= set(cmdline)
    # Each VM its own machine id (networkd's DHCP client id derives from it), stable per name.
    ids = {DEBIAN.cmdline(name=n, ping=None).split("systemd.machine_id=")[1] for n in ("a", "b")}
    assert len(ids) == 2 and all(len(i) == 32 for i in ids)


def test_the_guest_names_its_nics_eth_n_in_busybox_and_by_pci_slot_in_debian() -> None:
    xml = (
        "<domain><devices>"
        "<interface type='ethernet'><alias name='ua-default'/><address type='pci' slot='0x02'/></interface>"
        "<interface type='ethernet'><alias name='ua-secondary'/><address type='pci' slot='0x0a'/></interface>"
        "</devices></domain>"
    )
    assert BUSYBOX.nic_name(xml, "secondary", 1) == "eth1"
    assert DEBIAN.nic_name(xml, "default", 0) == "ens2"
    assert DEBIAN.nic_name(xml, "secondary", 1) == "ens10"


def test_the_networkmanager_guest_gets_a_machine_id_and_predictable_names_like_the_networkd_one() -> None:
    nm = GuestImage("debian-nm", Path("/k/vmlinuz"), Path("/n/initrd.cpio.gz"), Path("/n/root.img"), 160)
    cmdline = nm.cmdline(name="vm1", ping=None).split()
    assert "systemd.hostname=vm1" in cmdline
    assert [w for w in cmdline if w.startswith("systemd.machine_id=")] == [
        w for w in DEBIAN.cmdline(name="vm1", ping=None).split() if w.startswith("systemd.machine_id=")
    ]
    xml = (
        "<domain><devices><interface type='ethernet'><alias name='ua-default'/>"
        "<address type='pci' slot='0x03'/></interface></devices></domain>"
    )
    assert nm.nic_name(xml, "default", 0) == "ens3"
    assert "debian-nm" in GUEST_TYPES


def test_a_dhcp_ack_line_of_the_networkmanager_guest_names_where_its_lease_data_came_from() -> None:
    ack = parse_line(
        "LAB 120.10 dhcp-ack ens2 ip=10.244.2.10/24 router=10.244.2.1 server=169.254.75.10"
        " mac=ce:f0:b7:a9:17:b4 event=new lag=1.95 from=/run/NetworkManager/devices/2",
        1.0,
    )
    assert ack is not None and ack.nic == "ens2"
    assert ack.fields["from"] == "/run/NetworkManager/devices/2" and ack.fields["server"] == "169.254.75.10"


def test_a_timeline_orders_marks_and_prints_elapsed_seconds() -> None:
    tl = Timeline(origin=100.0)
    tl.add("migration end", 103.0)
    tl.add("migration start", 100.0, "pod1 -> pod2")
    tl.add("never happened", None)
    assert [m.label for m in tl.ordered()] == ["migration start", "migration end"]
    assert tl.elapsed("migration end") == 3.0
    assert tl.elapsed("never happened") is None
    table = tl.table("title")
    assert table.splitlines()[0] == "title"
    assert "3.00" in table and "pod1 -> pod2" in table
    assert tl.as_dicts()[1]["elapsed_s"] == 3.0
