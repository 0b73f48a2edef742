"""Choosing where the webhook acts (issue 26): a VM's own opt-out, the install's default NIC refresh,
and the install's MAC salt; each through the HTTP AdmissionReview endpoints of the in-process app,
against the named fake API of tests/webhook/kubevirt_api.py where a VM must be read."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

import jsonpatch
import pytest

from bridge_migration_contract import ALLOW_POD_BRIDGE_MIGRATION, HOOK_SIDECARS, NicRefresh, dump_macs
from kubelab.reviews import make_review
from sidecar.core.podinfo import from_annotations
from tests.webhook.kubevirt_api import FakeKubeVirtApi, patch_of, post_review, runtime
from tests.webhook.vmis import vmi
from webhook.cli import config_from_args
from webhook.config import WebhookConfig
from webhook.macs import pinned_mac
from webhook.vm_mutation import VmOwner, vm_owner

IMAGE = "registry.example/bridge-migration:test"
# The Sidecar gate forced on and delivery hook: no KubeVirt CR is read, so the fake API's reads are
# the VM reads alone.
CONFIG = WebhookConfig(sidecar_image=IMAGE, sidecar_gate="on", delivery="hook")
ENABLED = "bridge-migration.kubevirt.io/enabled"
MACS = "bridge-migration.kubevirt.io/macs"
POLICY = "bridge-migration.kubevirt.io/mac-policy"
NIC_REFRESH = "bridge-migration.kubevirt.io/nic-refresh"
VM_UID = "6c1f3d7e-0000-4000-8000-000000000001"
VMS = "/mutate/virtualmachines"
VMIS = "/mutate/virtualmachineinstances"
OPTED_OUT_VM = (
    'bridge-migration: VM demo/web-1 is opted out by its own annotation bridge-migration.kubevirt.io/enabled: "false":'
    " the VM and its template are left as they are, and the VMIs it starts are admitted as written"
)
OPTED_OUT_VMI = (
    "bridge-migration: VMI demo/web-1 admitted as written: its VM demo/web-1 is opted out by its own annotation"
    ' bridge-migration.kubevirt.io/enabled: "false"'
)


def a_vm(*, annotations: dict[str, str] | None = None, template: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "web-1", "namespace": "demo", "uid": VM_UID},
        "spec": {"runStrategy": "Always", "template": template or {"spec": copy.deepcopy(vmi()["spec"])}},
    }
    if annotations is not None:
        obj["metadata"]["annotations"] = annotations
    return obj


def made_from(vm: Mapping[str, Any]) -> dict[str, Any]:
    """The VMI virt-controller creates for ``vm`` (facts K12): the template's metadata and spec, the
    VM's name, a controller reference to the VM; none of the VM's own annotations."""
    template = copy.deepcopy(vm["spec"]["template"])
    metadata = {**template.get("metadata", {}), "name": vm["metadata"]["name"], "namespace": "demo"}
    metadata["ownerReferences"] = [
        {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "name": vm["metadata"]["name"],
            "uid": vm["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": metadata,
        "spec": template["spec"],
    }


def answer(
    review: Mapping[str, Any], path: str, *, api: FakeKubeVirtApi | None = None, config: WebhookConfig = CONFIG
) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        rt = runtime(config, api or FakeKubeVirtApi())
        try:
            return await post_review(rt, path, review)
        finally:
            assert rt.kube is not None
            await rt.kube.aclose()

    return asyncio.run(go())


def stored(obj: dict[str, Any], response: Mapping[str, Any]) -> dict[str, Any]:
    """The object the API server stores after our answer."""
    assert response["allowed"] is True
    return jsonpatch.apply_patch(obj, patch_of(response))  # type: ignore[no-any-return]


def in_api(vm: dict[str, Any]) -> FakeKubeVirtApi:
    return FakeKubeVirtApi(vms={"demo/web-1": vm})


def multus_bridge_vm(mac: str | None = None) -> dict[str, Any]:
    """A VM with a bridge NIC on a Multus network, with the spec MAC kubemacpool would give it."""
    iface: dict[str, Any] = {"name": "vlan", "bridge": {}}
    if mac is not None:
        iface["macAddress"] = mac
    spec = {
        "domain": {"devices": {"interfaces": [iface]}},
        "networks": [{"name": "vlan", "multus": {"networkName": "vlan-net"}}],
    }
    return a_vm(template={"spec": spec})


# ---- a VM's own opt-out -------------------------------------------------------------------------


def test_a_vm_opted_out_on_its_own_annotations_is_stored_as_written_and_told_so() -> None:
    vm = a_vm(annotations={ENABLED: "false"})
    response = answer(make_review(vm), VMS)
    assert stored(vm, response) == vm
    assert response["warnings"] == [OPTED_OUT_VM]
    # Without the annotation the same VM's template is completed, as before.
    assert patch_of(answer(make_review(a_vm()), VMS))


def test_opting_out_a_vm_we_completed_keeps_its_template_says_what_it_still_carries_and_says_it_once() -> None:
    completed = stored(a_vm(), answer(make_review(a_vm()), VMS))
    opted = copy.deepcopy(completed)
    opted["metadata"]["annotations"] = {ENABLED: " False "}  # kubectl annotate vm web-1 ...=false
    response = answer(make_review(opted, operation="UPDATE", old=completed), VMS)
    assert stored(opted, response) == opted
    assert response["warnings"] == [
        f"{OPTED_OUT_VM}; its template still carries {ALLOW_POD_BRIDGE_MIGRATION}, {HOOK_SIDECARS}, {MACS}, {POLICY},"
        " which bridge-migration does not remove"
    ]
    edited = copy.deepcopy(opted)
    edited["metadata"]["labels"] = {"tier": "web"}
    again = answer(make_review(edited, operation="UPDATE", old=opted), VMS)
    assert "patch" not in again and "warnings" not in again  # said when it opted out, not on every edit


def test_an_opted_out_vm_with_a_multicast_mac_in_its_template_is_not_refused() -> None:
    vm = a_vm(annotations={ENABLED: "false"})
    vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"] = "03:00:00:00:00:01"
    assert stored(vm, answer(make_review(vm), VMS)) == vm
    del vm["metadata"]["annotations"]
    assert answer(make_review(vm), VMS)["allowed"] is False  # refused (422) as before when not opted out


def test_the_vmi_virt_controller_makes_from_an_opted_out_vm_is_admitted_as_written_after_one_read() -> None:
    vm = a_vm(annotations={ENABLED: "false"})
    api = in_api(vm)
    made = made_from(vm)
    response = answer(make_review(made), VMIS, api=api)
    assert stored(made, response) == made
    assert response["warnings"] == [OPTED_OUT_VMI]
    assert api.vm_reads() == ["/apis/kubevirt.io/v1/namespaces/demo/virtualmachines/web-1"]


def test_the_vmi_of_a_vm_that_did_not_opt_out_is_completed_as_a_standalone_vmi_would_be() -> None:
    # A VM made before the install: its template was never completed, so its VMI is.
    api = in_api(a_vm())
    made = made_from(a_vm())
    after = stored(made, answer(make_review(made), VMIS, api=api))
    standalone = vmi()
    standalone_after = stored(standalone, answer(make_review(standalone), VMIS))
    assert after["spec"] == standalone_after["spec"]
    assert after["metadata"]["annotations"] == standalone_after["metadata"]["annotations"]
    assert len(api.vm_reads()) == 1


def test_a_vmi_made_from_a_template_we_completed_needs_no_read() -> None:
    completed = stored(a_vm(), answer(make_review(a_vm()), VMS))
    api = in_api(completed)
    response = answer(make_review(made_from(completed)), VMIS, api=api)
    assert "patch" not in response and "warnings" not in response
    assert api.vm_reads() == []


def test_a_vmi_whose_vm_cannot_be_read_is_decided_by_its_own_annotations_with_a_warning() -> None:
    made = made_from(a_vm(annotations={ENABLED: "false"}))
    response = answer(make_review(made), VMIS, api=FakeKubeVirtApi())  # the VM is not there (404)
    assert patch_of(response)  # as before this release: completed
    (warning,) = response["warnings"]
    assert warning.startswith("bridge-migration: could not read VM demo/web-1 to see whether it opted out (GET ")
    assert warning.endswith("not found); the VMI is decided by its own annotations")


def test_a_vmi_made_by_an_earlier_vm_of_that_name_is_not_held_to_the_new_vms_opt_out() -> None:
    recreated = a_vm(annotations={ENABLED: "false"})
    recreated["metadata"]["uid"] = "6c1f3d7e-0000-4000-8000-000000000002"
    response = answer(make_review(made_from(a_vm())), VMIS, api=in_api(recreated))
    assert patch_of(response) and "warnings" not in response


def test_a_vmi_with_a_multicast_mac_from_an_opted_out_vm_is_admitted_not_refused() -> None:
    vm = a_vm(annotations={ENABLED: "false"})
    vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"] = "03:00:00:00:00:01"
    made = made_from(vm)
    assert stored(made, answer(make_review(made), VMIS, api=in_api(vm))) == made
    del vm["metadata"]["annotations"]
    assert answer(make_review(made), VMIS, api=in_api(vm))["allowed"] is False


@pytest.mark.parametrize(
    ("refs", "owner"),
    [
        (None, None),
        ([], None),
        ([{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "web-1", "uid": "u", "controller": True}],
         VmOwner("web-1", "u")),
        ([{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "web-1"}], None),  # not the controller
        ([{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceReplicaSet", "name": "r",
           "controller": True}], None),
        ([{"apiVersion": "other.io/v1", "kind": "VirtualMachine", "name": "web-1", "controller": True}], None),
        ([{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "", "controller": True}], None),
        ([{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "web-1", "controller": True}],
         VmOwner("web-1", None)),
        ("not a list", None),
    ],
)  # fmt: skip
def test_only_a_controller_reference_to_a_kubevirt_vm_names_the_vm_to_read(refs: object, owner: VmOwner | None) -> None:
    obj = vmi()
    if refs is not None:
        obj["metadata"]["ownerReferences"] = refs
    assert vm_owner(obj) == owner


# ---- the install's default NIC refresh ----------------------------------------------------------


@pytest.mark.parametrize("refresh", ["auto", "link", "reattach"])
def test_the_install_default_nic_refresh_is_recorded_on_a_managed_vmi_and_the_fixer_reads_it(
    refresh: NicRefresh,
) -> None:
    config = WebhookConfig(sidecar_image=IMAGE, sidecar_gate="on", delivery="hook", nic_refresh=refresh)
    after = stored(vmi(), answer(make_review(vmi()), VMIS, config=config))
    annotations = after["metadata"]["annotations"]
    assert annotations[NIC_REFRESH] == refresh
    # virt-controller copies the VMI's annotations to its pods (facts L2), where the fixer reads them.
    info = from_annotations(annotations)
    assert info.nic_refresh == refresh and info.problems == ()


def test_a_vmis_own_nic_refresh_wins_over_the_install_default() -> None:
    config = WebhookConfig(sidecar_image=IMAGE, sidecar_gate="on", delivery="hook", nic_refresh="link")
    own = vmi(annotations={NIC_REFRESH: "reattach"})
    assert stored(own, answer(make_review(own), VMIS, config=config))["metadata"]["annotations"][NIC_REFRESH] == (
        "reattach"
    )


def test_a_vm_template_gets_the_record_and_its_vmi_needs_nothing_more() -> None:
    config = WebhookConfig(sidecar_image=IMAGE, sidecar_gate="on", delivery="hook", nic_refresh="link")
    completed = stored(a_vm(), answer(make_review(a_vm()), VMS, config=config))
    assert completed["spec"]["template"]["metadata"]["annotations"][NIC_REFRESH] == "link"
    assert "patch" not in answer(make_review(made_from(completed)), VMIS, config=config, api=in_api(completed))


def test_a_vmi_the_webhook_does_not_make_migratable_gets_no_record() -> None:
    masquerade = vmi(interfaces=[{"name": "default", "masquerade": {}}])
    assert "patch" not in answer(make_review(masquerade), VMIS)
    gate_off = WebhookConfig(sidecar_image=IMAGE, sidecar_gate="off", delivery="hook", nic_refresh="link")
    assert "patch" not in answer(make_review(vmi()), VMIS, config=gate_off)  # left non-migratable


# ---- the install's MAC salt ----------------------------------------------------------------------


def _mac(digest: bytes) -> str:
    return ":".join(f"{o:02x}" for o in [(digest[0] & 0xFC) | 0x02, *digest[1:6]])


def pinned_by(config: WebhookConfig, obj: dict[str, Any] | None = None) -> str:
    after = stored(obj or vmi(), answer(make_review(obj or vmi()), VMIS, config=config))
    return str(after["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"])


def test_without_a_salt_the_pinned_mac_is_the_one_earlier_releases_pinned() -> None:
    assert pinned_by(CONFIG) == "ce:55:24:30:65:c0" == _mac(hashlib.sha256(b"demo/web-1/default").digest())


def test_a_salt_changes_the_pinned_mac_and_the_same_salt_gives_the_same_mac() -> None:
    salted = WebhookConfig(sidecar_image=IMAGE, sidecar_gate="on", delivery="hook", mac_salt="9f86d081884c7d65")
    expected = _mac(hmac.new(b"9f86d081884c7d65", b"demo/web-1/default", hashlib.sha256).digest())
    assert pinned_by(salted) == expected == "3e:10:fc:cc:48:2c"
    assert pinned_by(salted) == expected  # another admission, the same install: the same MAC
    other_cluster = WebhookConfig(sidecar_image=IMAGE, sidecar_gate="on", delivery="hook", mac_salt="5e884898da28")
    assert len({pinned_by(CONFIG), expected, pinned_by(other_cluster)}) == 3
    # Still a MAC a NIC can carry: unicast, locally administered.
    assert int(expected[:2], 16) & 0x03 == 0x02
    assert pinned_mac(namespace="demo", vmi_name="web-1", interface="default", salt="9f86d081884c7d65") == expected


def test_a_mac_the_user_recorded_still_wins_over_a_salted_one() -> None:
    salted = WebhookConfig(sidecar_image=IMAGE, sidecar_gate="on", delivery="hook", mac_salt="abc")
    recorded = vmi(annotations={MACS: dump_macs({"default": "02:00:00:00:00:07"})})
    assert pinned_by(salted, recorded) == "02:00:00:00:00:07"


def test_a_spec_mac_kubemacpool_assigned_is_kept_and_recorded_whatever_the_salt() -> None:
    salted = WebhookConfig(sidecar_image=IMAGE, sidecar_gate="on", delivery="hook", mac_salt="9f86d081884c7d65")
    vm = multus_bridge_vm(mac="02:1a:4a:00:00:05")  # kubemacpool's pool, written at the VM's creation
    after = stored(vm, answer(make_review(vm), VMS, config=salted))
    template = after["spec"]["template"]
    assert template["spec"] == vm["spec"]["template"]["spec"]  # no MAC of ours in its place
    assert json.loads(template["metadata"]["annotations"][MACS]) == {"vlan": "02:1a:4a:00:00:05"}


def test_under_keep_the_mac_kubemacpool_adds_after_us_is_recorded_when_we_are_called_again() -> None:
    keep = WebhookConfig(sidecar_image=IMAGE, sidecar_gate="on", delivery="hook", mac_policy="keep")
    first = stored(multus_bridge_vm(), answer(make_review(multus_bridge_vm()), VMS, config=keep))
    assert "macAddress" not in first["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]
    assert MACS not in first["spec"]["template"]["metadata"]["annotations"]
    # kubemacpool (a later mutating webhook) assigns one; reinvocationPolicy IfNeeded calls us again.
    first["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"] = "02:1a:4a:00:00:06"
    again = stored(first, answer(make_review(first), VMS, config=keep))
    assert json.loads(again["spec"]["template"]["metadata"]["annotations"][MACS]) == {"vlan": "02:1a:4a:00:00:06"}


# ---- flags --------------------------------------------------------------------------------------


def test_nic_refresh_and_mac_salt_come_from_their_flags_or_their_environment_twins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defaults = config_from_args(["--dev"])
    assert (defaults.nic_refresh, defaults.mac_salt) == ("auto", "")
    flags = config_from_args(["--dev", "--nic-refresh", "reattach", "--mac-salt", "9f86d081884c7d65"])
    assert (flags.nic_refresh, flags.mac_salt) == ("reattach", "9f86d081884c7d65")
    monkeypatch.setenv("BM_WEBHOOK_NIC_REFRESH", "link")
    monkeypatch.setenv("BM_WEBHOOK_MAC_SALT", "from-env")
    env = config_from_args(["--dev"])
    assert (env.nic_refresh, env.mac_salt) == ("link", "from-env")


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"BM_WEBHOOK_NIC_REFRESH": "sometimes"}, "--nic-refresh (or BM_WEBHOOK_NIC_REFRESH): invalid choice"),
        ({"BM_WEBHOOK_MAC_SALT": "abc\n"}, "--mac-salt (or BM_WEBHOOK_MAC_SALT): must be at most 256 printable"),
        ({"BM_WEBHOOK_MAC_SALT": "two words"}, "--mac-salt (or BM_WEBHOOK_MAC_SALT): must be at most 256 printable"),
        ({"BM_WEBHOOK_MAC_SALT": "x" * 257}, "--mac-salt (or BM_WEBHOOK_MAC_SALT): must be at most 256 printable"),
    ],
)
def test_a_bad_nic_refresh_or_salt_stops_the_webhook_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: dict[str, str], says: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_:
        config_from_args(["--dev"])
    assert exit_.value.code == 2
    assert says in capsys.readouterr().err
