"""LAB TOOL ONLY: a hand-made link refresh, to exercise the lab without the product.

It flips the guest NIC's link down and up through libvirt so the lab's own tests can show
that a guest in a migrated pod recovers once its link flaps. The product's fixup is the
sidecar's; scenario tests never use this in its place.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from typing import Any

import libvirt

from bridge_migration_contract import domain_alias


def _interface(dom: Any, alias: str) -> ET.Element:
    root = ET.fromstring(dom.XMLDesc(0))
    for iface in root.iter("interface"):
        found = iface.find("alias")
        if found is not None and found.get("name") == alias:
            return iface
    raise LookupError(f"no interface with alias {alias} in {dom.name()}")


def _set_link(dom: Any, iface: ET.Element, state: str) -> None:
    link = iface.find("link")
    if link is None:
        link = ET.SubElement(iface, "link")
    link.set("state", state)
    flags = libvirt.VIR_DOMAIN_AFFECT_LIVE
    if dom.isPersistent():
        flags |= libvirt.VIR_DOMAIN_AFFECT_CONFIG
    dom.updateDeviceFlags(ET.tostring(iface, encoding="unicode"), flags)


def lab_link_refresh(dom: Any, *, interface: str = "default", pause: float = 0.1) -> None:
    """Link down, ``pause`` seconds, link up on the NIC of VMI interface ``interface``."""
    iface = _interface(dom, domain_alias(interface))
    _set_link(dom, iface, "down")
    time.sleep(pause)
    _set_link(dom, iface, "up")
