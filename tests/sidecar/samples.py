"""Domain XML and VMI samples shaped like what virt-launcher produces."""

from __future__ import annotations

from typing import Any

POD_MAC = "0a:58:0a:f4:00:07"
GUEST_MAC = "02:00:00:aa:bb:01"


def domain_xml(*, mac: str = GUEST_MAC, link_down: bool = False, extra: str = "") -> str:
    link = "<link state='down'/>" if link_down else ""
    return f"""<domain type='kvm'>
  <name>default_vmi-bridge</name>
  <devices>
    <interface type='ethernet'>
      <mac address='{mac}'/>
      <target dev='tap0' managed='no'/>
      <model type='virtio-non-transitional'/>
      <mtu size='1480'/>
      <alias name='ua-default'/>
      <rom enabled='no'/>
      {link}
      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
    </interface>
    {extra}
  </devices>
</domain>"""


MACVTAP_IFACE = """<interface type='ethernet'>
      <mac address='02:00:00:aa:bb:02'/>
      <target dev='macvtap0' managed='no'/>
      <model type='virtio'/>
      <alias name='ua-fast'/>
    </interface>"""

MASQ_IFACE = """<interface type='ethernet'>
      <mac address='02:00:00:aa:bb:03'/>
      <target dev='tap1' managed='no'/>
      <alias name='ua-masq'/>
    </interface>"""

NO_ALIAS_IFACE = """<interface type='network'>
      <mac address='52:54:00:00:00:09'/>
      <source network='default'/>
    </interface>"""


def vmi(
    *,
    interfaces: list[dict[str, Any]] | None = None,
    networks: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": "vmi-bridge", "namespace": "default", "annotations": annotations or {}},
        "spec": {
            "domain": {"devices": {"interfaces": interfaces or [{"name": "default", "bridge": {}}]}},
            "networks": networks or [{"name": "default", "pod": {}}],
        },
    }


THREE_NIC_VMI = vmi(
    interfaces=[
        {"name": "default", "bridge": {}},
        {"name": "fast", "binding": {"name": "macvtap"}},
        {"name": "masq", "masquerade": {}},
    ],
    networks=[
        {"name": "default", "pod": {}},
        {"name": "fast", "multus": {"networkName": "macvtap-net"}},
        {"name": "masq", "multus": {"networkName": "other"}},
    ],
)


# A bridge NIC on a Multus network (a VLAN) beside the pod network's.
VLAN_IFACE = """<interface type='ethernet'>
      <mac address='02:00:00:aa:bb:07'/>
      <target dev='tap1f3e9a0c2b7' managed='no'/>
      <model type='virtio-non-transitional'/>
      <alias name='ua-vlan7'/>
    </interface>"""
VLAN_VMI = vmi(
    interfaces=[{"name": "default", "bridge": {}}, {"name": "vlan7", "bridge": {}}],
    networks=[{"name": "default", "pod": {}}, {"name": "vlan7", "multus": {"networkName": "default/vlan7"}}],
)
