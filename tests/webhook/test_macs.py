"""Pinned MACs: stable for one VMI interface, distinct across VMIs, valid unicast LAA."""

from webhook.macs import pinned_mac


def test_the_same_vmi_interface_always_gets_the_same_mac() -> None:
    first = pinned_mac(namespace="demo", vmi_name="web-1", interface="default")
    assert first == pinned_mac(namespace="demo", vmi_name="web-1", interface="default")


def test_other_vmis_namespaces_and_interfaces_get_other_macs() -> None:
    macs = {
        pinned_mac(namespace=ns, vmi_name=name, interface=iface)
        for ns in ("demo", "prod")
        for name in ("web-1", "web-2")
        for iface in ("default", "lan")
    }
    assert len(macs) == 8


def test_pinned_macs_are_locally_administered_unicast() -> None:
    for i in range(500):
        mac = pinned_mac(namespace="ns", vmi_name=f"vm-{i}", interface="default")
        first = int(mac.split(":")[0], 16)
        assert first & 0x01 == 0, mac  # unicast
        assert first & 0x02 == 0x02, mac  # locally administered
