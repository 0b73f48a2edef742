"""Which interfaces we look after, and how the shared annotations are read."""

import pytest

from bridge_migration_contract import (
    DELIVERIES,
    DELIVERY_CHOICES,
    FIXER_DELIVERIES,
    AnnotationKeys,
    dump_macs,
    macvtap_left_alone,
    managed_interfaces,
    normalize_mac,
    parse_delivery,
    parse_macs,
    parse_skip_multus_bridges,
    vmi_managed_interfaces,
)
from tests.webhook.vmis import vmi


def names(obj: dict[str, object]) -> list[str]:
    return [i["name"] for i in managed_interfaces(obj["spec"])]  # type: ignore[arg-type]


def test_bridge_on_the_pod_network_is_managed() -> None:
    assert names(vmi()) == ["default"]


def test_masquerade_and_sriov_are_not_managed() -> None:
    obj = vmi(
        interfaces=[{"name": "default", "masquerade": {}}, {"name": "fast", "sriov": {}}],
        networks=[{"name": "default", "pod": {}}, {"name": "fast", "multus": {"networkName": "sriov"}}],
    )
    assert names(obj) == []


def test_only_the_macvtap_binding_plugin_on_a_multus_network_is_managed() -> None:
    """facts V1-V3: the core binding is discontinued, the plugin serves Multus networks only."""
    obj = vmi(
        interfaces=[
            {"name": "default", "macvtap": {}},
            {"name": "lan", "binding": {"name": "macvtap"}},
            {"name": "old", "macvtap": {}},
            {"name": "front", "binding": {"name": "macvtap"}},
            {"name": "other", "binding": {"name": "passt"}},
        ],
        networks=[
            {"name": "default", "pod": {}},
            {"name": "lan", "multus": {"networkName": "lan"}},
            {"name": "old", "multus": {"networkName": "old"}},
            {"name": "front", "pod": {}},
            {"name": "other", "pod": {}},
        ],
    )
    managed = managed_interfaces(obj["spec"])
    assert [(i["name"], i["binding"], i["network"]) for i in managed] == [("lan", "macvtap", "multus")]
    assert macvtap_left_alone(obj["spec"]) == [("default", "core"), ("old", "core"), ("front", "pod-network")]


def test_a_core_macvtap_interface_without_a_network_is_still_named_and_bridges_never_are() -> None:
    obj = vmi(
        interfaces=[{"name": "default", "bridge": {}}, {"name": "lost", "macvtap": {}}, "junk"],
        networks=[{"name": "default", "pod": {}}],
    )
    assert macvtap_left_alone(obj["spec"]) == [("lost", "core")]
    assert macvtap_left_alone({}) == []


def _two_multus_bridges(annotations: dict[str, str] | None = None) -> dict[str, object]:
    obj = vmi(
        interfaces=[{"name": "default", "bridge": {}}, {"name": "lan", "bridge": {}}, {"name": "vlan7", "bridge": {}}],
        networks=[
            {"name": "default", "pod": {}},
            {"name": "lan", "multus": {"networkName": "lan"}},
            {"name": "vlan7", "multus": {"networkName": "ns/vlan7"}},
        ],
    )
    if annotations:
        obj["metadata"]["annotations"] = annotations  # type: ignore[index]
    return obj


def test_bridge_on_a_multus_network_is_managed_by_default() -> None:
    managed = managed_interfaces(_two_multus_bridges()["spec"])  # type: ignore[arg-type]
    assert [(i["name"], i["binding"], i["network"]) for i in managed] == [
        ("default", "bridge", "pod"),
        ("lan", "bridge", "multus"),
        ("vlan7", "bridge", "multus"),
    ]


def test_the_opt_out_annotation_skips_named_multus_bridges_or_all_of_them_never_the_pod_network() -> None:
    key = AnnotationKeys().skip_multus_bridges
    assert key == "bridge-migration.kubevirt.io/skip-multus-bridges"

    def managed(value: str) -> list[str]:
        return [i["name"] for i in vmi_managed_interfaces(_two_multus_bridges({key: value}))]

    assert managed("vlan7") == ["default", "lan"]
    assert managed(" lan , vlan7 ") == ["default"]
    assert managed("*") == ["default"]
    # The pod network's NIC is what the add-on is for: the opt-out for it is enabled=false.
    assert managed("default") == ["default", "lan", "vlan7"]
    assert managed("") == ["default", "lan", "vlan7"]
    assert parse_skip_multus_bridges(None) == frozenset()


def test_the_opt_out_leaves_macvtap_on_multus_managed() -> None:
    obj = vmi(
        interfaces=[{"name": "default", "bridge": {}}, {"name": "lan", "binding": {"name": "macvtap"}}],
        networks=[{"name": "default", "pod": {}}, {"name": "lan", "multus": {"networkName": "lan"}}],
    )
    obj["metadata"]["annotations"] = {AnnotationKeys().skip_multus_bridges: "*"}  # type: ignore[index]
    assert [i["name"] for i in vmi_managed_interfaces(obj)] == ["default", "lan"]


def test_an_interface_without_a_network_or_garbage_entries_are_skipped() -> None:
    obj = vmi(interfaces=[{"name": "default", "bridge": {}}, "junk", {"bridge": {}}], networks=[{"pod": {}}, 7])
    assert names(obj) == []


def test_spec_mac_is_normalized() -> None:
    obj = vmi(interfaces=[{"name": "default", "bridge": {}, "macAddress": "02-AA-bb-00-11-22"}])
    assert managed_interfaces(obj["spec"])[0]["mac"] == "02:aa:bb:00:11:22"


def test_every_mac_form_kubevirt_accepts_is_understood_and_others_are_not() -> None:
    """virt-api takes what Go's net.ParseMAC takes for 6 bytes (facts K7), dot form included."""
    for form in ("02:00:5E:10:00:01", "02-00-5e-10-00-01", "0200.5e10.0001"):
        assert normalize_mac(form) == "02:00:5e:10:00:01"
    for bad in ("0200.5e10.00012", "02:00:5e:10:00", "02:00:5e:10:00:01:02", "02005e100001", "0200:5e10:0001"):
        with pytest.raises(ValueError):
            normalize_mac(bad)


def test_macs_annotation_round_trips_and_rejects_junk() -> None:
    assert parse_macs(dump_macs({"b": "02:00:00:00:00:02", "a": "02:00:00:00:00:01"})) == {
        "a": "02:00:00:00:00:01",
        "b": "02:00:00:00:00:02",
    }
    for bad in ("{", "[]", '{"a": 1}', '{"a": "zz:00:00:00:00:00"}'):
        with pytest.raises(ValueError):
            parse_macs(bad)


def test_annotation_prefix_is_configurable_and_checked() -> None:
    keys = AnnotationKeys("example.org/")
    assert (keys.enabled, keys.macs, keys.mac_policy) == (
        "example.org/enabled",
        "example.org/macs",
        "example.org/mac-policy",
    )
    with pytest.raises(ValueError):
        AnnotationKeys("no-slash")


def test_the_delivery_names_are_one_family() -> None:
    assert set(FIXER_DELIVERIES) < set(DELIVERIES)
    assert ("auto", *DELIVERIES) == DELIVERY_CHOICES


@pytest.mark.parametrize(
    ("value", "read"),
    [
        ("hook", "hook"),
        ("inject", "inject"),
        (" node\n", "node"),
        ("auto", None),  # a choice of the webhook's flag, never a VMI's delivery
        ("Inject", None),
        ("", None),
        (None, None),
        (7, None),
    ],
)
def test_the_delivery_annotation_is_read_one_way(value: object, read: str | None) -> None:
    assert parse_delivery(value) == read
