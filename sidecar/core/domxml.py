"""Reading and rewriting libvirt domain XML: the `<interface>` elements the fixup cares about.

Pure functions over strings; nothing here talks to libvirt.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Literal

from bridge_migration_contract import normalize_mac

LinkState = Literal["up", "down"]


@dataclass(frozen=True)
class DomainInterface:
    """One `<interface>` of a domain, as libvirt describes it."""

    alias: str | None
    type: str
    mac: str | None
    target_dev: str | None
    link_state: LinkState
    model: str | None
    source: dict[str, str] = field(default_factory=dict)
    xml: str = ""


def _text_attr(elem: ET.Element, path: str, attr: str) -> str | None:
    child = elem.find(path)
    return None if child is None else child.get(attr)


def _mac_of(elem: ET.Element) -> str | None:
    raw = _text_attr(elem, "mac", "address")
    if raw is None:
        return None
    try:
        return normalize_mac(raw)
    except ValueError:
        return None


def interface_from_element(elem: ET.Element) -> DomainInterface:
    link = _text_attr(elem, "link", "state")
    source = elem.find("source")
    return DomainInterface(
        alias=_text_attr(elem, "alias", "name"),
        type=elem.get("type", ""),
        mac=_mac_of(elem),
        target_dev=_text_attr(elem, "target", "dev"),
        link_state="down" if link == "down" else "up",
        model=_text_attr(elem, "model", "type"),
        source=dict(source.attrib) if source is not None else {},
        xml=ET.tostring(elem, encoding="unicode").strip(),
    )


def parse_interfaces(domain_xml: str) -> list[DomainInterface]:
    """Every `<interface>` under `<devices>`, in document order."""
    root = ET.fromstring(domain_xml)
    return [interface_from_element(e) for e in root.findall("./devices/interface")]


def with_link_state(interface_xml: str, state: LinkState) -> str:
    """The interface XML with `<link state='down'/>`, or with no `<link>` at all for up.

    Removing the element (rather than writing state='up') is what brings the link back in
    every libvirt version and leaves the XML as virt-launcher wrote it.
    """
    elem = ET.fromstring(interface_xml)
    for link in elem.findall("link"):
        elem.remove(link)
    if state == "down":
        ET.SubElement(elem, "link", {"state": "down"})
    return ET.tostring(elem, encoding="unicode")


def with_mac(interface_xml: str, mac: str) -> str:
    """The interface XML to attach with a new MAC.

    The tap that virt-launcher made (`<target dev='tap0' managed='no'/>`) is kept because
    libvirt must reuse it; a libvirt-managed target name is dropped so libvirt picks a free
    one. The PCI address and the `ua-` alias stay, so the guest sees the same slot.
    """
    elem = ET.fromstring(interface_xml)
    mac_elem = elem.find("mac")
    if mac_elem is None:
        mac_elem = ET.SubElement(elem, "mac")
    mac_elem.set("address", normalize_mac(mac))
    target = elem.find("target")
    if target is not None and target.get("managed") != "no":
        elem.remove(target)
    for link in elem.findall("link"):
        elem.remove(link)
    return ET.tostring(elem, encoding="unicode")
