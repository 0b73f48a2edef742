"""Reading interfaces out of domain XML and rewriting one for link state or MAC."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from sidecar.core.domxml import parse_interfaces, with_link_state, with_mac
from tests.sidecar.samples import GUEST_MAC, NO_ALIAS_IFACE, domain_xml


def test_interfaces_are_read_with_alias_mac_target_and_link_state() -> None:
    [iface, other] = parse_interfaces(domain_xml(link_down=True, extra=NO_ALIAS_IFACE))
    assert (iface.alias, iface.type, iface.mac, iface.target_dev, iface.link_state) == (
        "ua-default",
        "ethernet",
        GUEST_MAC,
        "tap0",
        "down",
    )
    assert other.alias is None and other.link_state == "up" and other.source == {"network": "default"}


def test_link_down_adds_one_link_element_and_link_up_removes_it() -> None:
    [iface] = parse_interfaces(domain_xml())
    down = ET.fromstring(with_link_state(iface.xml, "down"))
    assert [e.get("state") for e in down.findall("link")] == ["down"]
    up = ET.fromstring(with_link_state(with_link_state(iface.xml, "down"), "up"))
    assert up.findall("link") == []


def test_a_new_mac_keeps_the_unmanaged_tap_alias_and_pci_address() -> None:
    [iface] = parse_interfaces(domain_xml(link_down=True))
    new = ET.fromstring(with_mac(iface.xml, "02:AA:BB:CC:DD:EE"))
    assert new.find("mac").get("address") == "02:aa:bb:cc:dd:ee"  # type: ignore[union-attr]
    assert new.find("target").attrib == {"dev": "tap0", "managed": "no"}  # type: ignore[union-attr]
    assert new.find("alias").get("name") == "ua-default"  # type: ignore[union-attr]
    assert new.find("address") is not None
    assert new.find("link") is None


def test_a_new_mac_drops_a_libvirt_managed_target_name() -> None:
    xml = (
        "<interface type='bridge'><mac address='52:54:00:00:00:01'/>"
        "<source bridge='br0'/><target dev='vnet3'/></interface>"
    )
    new = ET.fromstring(with_mac(xml, "52:54:00:00:00:02"))
    assert new.find("target") is None
    assert new.find("source").get("bridge") == "br0"  # type: ignore[union-attr]


# --- found by mutation testing (docs/testing.md, "Mutation testing") --------------------------------


def test_the_xml_handed_to_libvirt_is_text() -> None:
    [iface] = parse_interfaces(domain_xml())
    assert isinstance(iface.xml, str) and iface.xml.startswith('<interface type="ethernet">')
    rewritten = with_mac(iface.xml, "02:aa:bb:cc:dd:ee")
    assert isinstance(rewritten, str) and rewritten.startswith("<interface")


def test_an_interface_without_a_mac_gets_the_new_one() -> None:
    xml = "<interface type='ethernet'><target dev='tap0' managed='no'/><alias name='ua-default'/></interface>"
    new = ET.fromstring(with_mac(xml, "02:AA:BB:CC:DD:EE"))
    assert [m.get("address") for m in new.findall("mac")] == ["02:aa:bb:cc:dd:ee"]
