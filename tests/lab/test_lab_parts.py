"""The lab's pure parts: console lines, downward-API files, domain XML, pinned MACs, timelines."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from bridge_migration_contract import normalize_mac, parse_macs
from lab.cluster import pinned_mac
from lab.console import parse_line
from lab.domain import Nic, domain_name, domain_xml
from lab.sidecar import downward_api_file
from lab.timeline import Timeline
from sidecar.podinfo import parse_annotations_file


def test_a_console_line_from_the_guest_becomes_an_event_with_fields() -> None:
    event = parse_line("LAB 12.34 dhcp-ack eth0 ip=10.244.2.10/24 router=10.244.2.1 mac=02:aa:bb:cc:dd:ee\r", 5.0)
    assert event is not None
    assert (event.kind, event.nic, event.at) == ("dhcp-ack", "eth0", 5.0)
    assert event.fields["ip"] == "10.244.2.10/24"
    assert event.fields["mac"] == "02:aa:bb:cc:dd:ee"


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
