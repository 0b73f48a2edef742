"""Pinned MACs: stable for one VMI interface, distinct across VMIs, valid unicast LAA; and the MACs
a user gives us (spec macAddress, our macs annotation): unicast or refused."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge_migration_contract import normalize_mac
from webhook.macs import parse_unicast_macs, pinned_mac, unicast_mac


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


# What the webhook accepts from a user as a MAC to pin or hand on: unicast only. Each value below
# passes the contract's normalize_mac (it is a MAC), and libvirt 9.0 refuses the first two at
# define ("expected unicast mac address, found multicast"); the all-zero one it takes, and the guest
# then has no usable address.
NOT_UNICAST = {
    "01:00:5e:00:00:01": "multicast",
    "33-33-00-00-00-01": "multicast",
    "0100.5e00.00fb": "multicast",
    "03:00:00:00:00:01": "multicast",
    "FF:FF:FF:FF:FF:FF": "broadcast",
    "00:00:00:00:00:00": "all-zero",
}


@pytest.mark.parametrize(("mac", "kind"), sorted(NOT_UNICAST.items()))
def test_multicast_broadcast_and_all_zero_macs_are_refused_with_what_they_are(mac: str, kind: str) -> None:
    assert normalize_mac(mac)  # a MAC the contract (and the sidecar reading libvirt) still reads
    with pytest.raises(ValueError, match=rf"is the {kind} MAC|is a {kind} MAC") as info:
        unicast_mac(mac)
    assert "unicast" in str(info.value)


@pytest.mark.parametrize("mac", ["02:00:00:00:00:01", "52-54-00-12-34-56", "0200.0000.0001", "00:00:00:00:00:01"])
def test_unicast_macs_are_accepted_in_the_contracts_form(mac: str) -> None:
    assert unicast_mac(mac) == normalize_mac(mac)


@given(st.binary(min_size=6, max_size=6))
def test_exactly_the_macs_with_the_group_bit_clear_and_not_all_zero_pass(octets: bytes) -> None:
    mac = ":".join(f"{o:02x}" for o in octets)
    if octets[0] & 1 or octets == bytes(6):
        with pytest.raises(ValueError):
            unicast_mac(mac)
    else:
        assert unicast_mac(mac) == mac


def test_a_macs_annotation_entry_that_is_not_unicast_is_named_by_its_interface() -> None:
    assert parse_unicast_macs('{"default":"02:00:00:00:00:01"}') == {"default": "02:00:00:00:00:01"}
    with pytest.raises(ValueError, match="interface 'lan': '01:00:5e:00:00:01' is a multicast MAC"):
        parse_unicast_macs('{"default":"02:00:00:00:00:01","lan":"01:00:5e:00:00:01"}')
