"""macvtap at admission (issue 27), as a user sees it through the webhook's HTTP endpoints.

What the webhook does follows docs/kubevirt-facts.md V1-V6: the core ``macvtap: {}`` binding is
discontinued (v1.5+ refuses new VMIs with it) and the binding plugin serves Multus networks only,
so neither of those is ours and the user is told; a plugin interface on a Multus network is ours,
and its MAC is pinned under every MAC policy, because the target pod's macvtap device carries the
spec's MAC and no other. The API is the NAMED FAKE of tests/webhook/kubevirt_api.py.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

from bridge_migration_contract import ALLOW_POD_BRIDGE_MIGRATION, HOOK_SIDECARS
from tests.webhook.kubevirt_api import FakeKubeVirtApi, admit_once, patch_of
from tests.webhook.vmis import vmi
from webhook.config import WebhookConfig
from webhook.macs import pinned_mac

IMAGE = "registry.example/bridge-migration:test"
BASE = WebhookConfig(dev=True, sidecar_image=IMAGE)
VMIS = "mutate/virtualmachineinstances"
VMS = "mutate/virtualmachines"
MIGRATIONS = "validate/virtualmachineinstancemigrations"
POLICY = "bridge-migration.kubevirt.io/mac-policy"
MACS = "bridge-migration.kubevirt.io/macs"
DELIVERY = "bridge-migration.kubevirt.io/delivery"

PLUGIN = {"binding": {"name": "macvtap"}}
LAN = {"name": "lan", "multus": {"networkName": "macvtap-lan"}}
POD = {"name": "default", "pod": {}}

CORE_WARNING = (
    "bridge-migration: VM demo/web-1: interface lan uses the core macvtap binding (macvtap: {}), which KubeVirt "
    "discontinued in v1.3 (virt-api refuses it from v1.5 on); bridge-migration leaves it alone. Use the macvtap "
    "binding plugin instead: binding: {name: macvtap} on a Multus network"
)
POD_NETWORK_WARNING = (
    "bridge-migration: VMI demo/web-1: interface default uses the macvtap binding plugin on the pod network, but "
    "KubeVirt's macvtap plugin is for Multus secondary networks only; bridge-migration leaves it alone. "
    "Put it on a Multus network"
)


def pin_warning(policy: str) -> str:
    return (
        f"bridge-migration: interface lan uses the macvtap binding plugin: its MAC is pinned although the MAC policy "
        f"is {policy}. The target pod's macvtap device carries the guest's MAC only when the VMI spec sets one; "
        "without it, frames to the guest are not delivered after a migration"
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def vm_of(template: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": template["metadata"]["name"], "namespace": "demo"},
        "spec": {
            "template": {
                "metadata": {"annotations": template["metadata"].get("annotations", {})},
                "spec": template["spec"],
            }
        },
    }


def added(response: dict[str, Any]) -> dict[str, Any]:
    return {op["path"]: op.get("value") for op in patch_of(response)}


def sidecar_api() -> FakeKubeVirtApi:
    return FakeKubeVirtApi(gates=["Sidecar"])  # hook delivery under --delivery auto


# --- the core binding ----------------------------------------------------------------------------


def test_a_vm_with_the_core_macvtap_binding_gets_no_mutation_and_a_warning_naming_the_interface() -> None:
    obj = vm_of(vmi(interfaces=[{"name": "lan", "macvtap": {}}], networks=[LAN]))
    response = run(admit_once(BASE, sidecar_api(), VMS, obj))
    assert response["allowed"] is True
    assert patch_of(response) == []
    assert response["warnings"] == [CORE_WARNING]


def test_beside_a_bridge_the_core_macvtap_interface_is_left_out_of_everything_we_write() -> None:
    obj = vmi(interfaces=[{"name": "default", "bridge": {}}, {"name": "lan", "macvtap": {}}], networks=[POD, LAN])
    response = run(admit_once(BASE, sidecar_api(), VMIS, obj))
    ops = added(response)
    mac = pinned_mac(namespace="demo", vmi_name="web-1", interface="default")
    assert ops["/spec/domain/devices/interfaces/0/macAddress"] == mac
    assert "/spec/domain/devices/interfaces/1/macAddress" not in ops
    assert json.loads(ops["/metadata/annotations"][MACS]) == {"default": mac}
    assert response["warnings"] == [CORE_WARNING.replace("VM demo/", "VMI demo/")]


# --- the plugin on the pod network ---------------------------------------------------------------


def test_the_macvtap_plugin_on_the_pod_network_is_not_managed_and_says_why() -> None:
    obj = vmi(interfaces=[{"name": "default", **PLUGIN}], networks=[POD])
    response = run(admit_once(BASE, sidecar_api(), VMIS, obj))
    assert response["allowed"] is True
    assert patch_of(response) == []
    assert response["warnings"] == [POD_NETWORK_WARNING]


# --- the plugin on a Multus network --------------------------------------------------------------


def test_a_macvtap_plugin_nic_under_keep_gets_a_pinned_mac_and_a_warning_while_a_bridge_does_not() -> None:
    obj = vmi(
        interfaces=[{"name": "default", "bridge": {}}, {"name": "lan", **PLUGIN}],
        networks=[POD, LAN],
        annotations={POLICY: "keep"},
    )
    response = run(admit_once(BASE, sidecar_api(), VMIS, obj))
    ops = added(response)
    mac = pinned_mac(namespace="demo", vmi_name="web-1", interface="lan")
    assert ops["/spec/domain/devices/interfaces/1/macAddress"] == mac
    assert "/spec/domain/devices/interfaces/0/macAddress" not in ops  # keep is honoured for the bridge
    ann = {op["path"].rsplit("/", 1)[-1].replace("~1", "/"): op["value"] for op in patch_of(response)}
    assert json.loads(ann[MACS]) == {"lan": mac}
    assert ALLOW_POD_BRIDGE_MIGRATION in ann and HOOK_SIDECARS in ann
    assert response["warnings"] == [pin_warning("keep")]


def test_the_webhooks_own_follow_pod_default_pins_macvtap_too_and_the_vm_template_carries_it() -> None:
    config = replace(BASE, mac_policy="follow-pod")
    obj = vm_of(vmi(interfaces=[{"name": "lan", **PLUGIN}], networks=[LAN]))
    response = run(admit_once(config, sidecar_api(), VMS, obj))
    ops = added(response)
    mac = pinned_mac(namespace="demo", vmi_name="web-1", interface="lan")
    assert ops["/spec/template/spec/domain/devices/interfaces/0/macAddress"] == mac
    assert response["warnings"] == [pin_warning("follow-pod")]


def test_under_pin_a_macvtap_nic_is_pinned_without_a_warning_and_a_spec_mac_is_kept_under_any_policy() -> None:
    response = run(admit_once(BASE, sidecar_api(), VMIS, vmi(interfaces=[{"name": "lan", **PLUGIN}], networks=[LAN])))
    assert "/spec/domain/devices/interfaces/0/macAddress" in added(response)
    assert "warnings" not in response
    own = vmi(
        interfaces=[{"name": "lan", **PLUGIN, "macAddress": "02:00:00:00:00:0a"}],
        networks=[LAN],
        annotations={POLICY: "keep"},
    )
    response = run(admit_once(BASE, sidecar_api(), VMIS, own))
    assert "/spec/domain/devices/interfaces/0/macAddress" not in added(response)
    assert "warnings" not in response


def test_a_vmi_left_unchanged_for_want_of_a_fixer_gets_no_pin_either() -> None:
    """The pin is part of making the VMI ours: with no fixer that acts it is admitted as written."""
    obj = vmi(interfaces=[{"name": "lan", **PLUGIN}], networks=[LAN], annotations={POLICY: "keep"})
    response = run(admit_once(replace(BASE, delivery="hook"), FakeKubeVirtApi(), VMIS, obj))
    assert patch_of(response) == []
    [warning] = response["warnings"]
    assert "stays non-migratable" in warning and "its MAC is pinned" not in warning


# --- migrations ----------------------------------------------------------------------------------


def migration(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": "move", "namespace": "demo", "annotations": annotations or {}},
        "spec": {"vmiName": "web-1"},
    }


def running(*, mac: str | None = None, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    iface: dict[str, Any] = {"name": "lan", **PLUGIN}
    if mac is not None:
        iface["macAddress"] = mac
    return vmi(interfaces=[iface], networks=[LAN], annotations=annotations)


OURS = {HOOK_SIDECARS: json.dumps([{"image": IMAGE}])}
UNPINNED = (
    "macvtap interfaces lan have no macAddress in the spec, so the target pod's macvtap device will carry another "
    "MAC than the guest's"
)


def test_migrating_an_unpinned_macvtap_vmi_with_our_fixer_warns_that_the_guests_mac_changes() -> None:
    api = sidecar_api()
    api.vmis["demo/web-1"] = running(annotations=OURS)
    response = run(admit_once(replace(BASE, validation="strict"), api, MIGRATIONS, migration()))
    assert response["allowed"] is True
    assert response["warnings"] == [
        f"bridge-migration: VMI demo/web-1: its {UNPINNED}: the fixer re-attaches them with the device's MAC, so the "
        "guest's MAC changes and it may get another address. Pin a macAddress in the spec (recreate the VM) to keep "
        "both."
    ]


def test_migrating_an_unpinned_macvtap_vmi_without_a_fixer_is_refused_in_strict_mode_and_says_why() -> None:
    api = sidecar_api()
    api.vmis["demo/web-1"] = running()
    response = run(admit_once(replace(BASE, validation="strict"), api, MIGRATIONS, migration()))
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert "no bridge-migration sidecar" in message
    assert message.endswith(f"Its {UNPINNED}, and frames to the guest would not be delivered there.")
    # Warn mode (the default) admits it with the same words.
    response = run(admit_once(BASE, api, MIGRATIONS, migration()))
    assert response["allowed"] is True and response["warnings"] == [message]


def test_the_node_agent_cannot_fix_an_unpinned_macvtap_nic_so_strict_mode_refuses_the_move() -> None:
    api = FakeKubeVirtApi(gates=["Plugins"])
    api.vmis["demo/web-1"] = running(annotations={DELIVERY: "node"})
    config = replace(BASE, validation="strict", node_agent=True)
    response = run(admit_once(config, api, MIGRATIONS, migration()))
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert f"VMI demo/web-1: its {UNPINNED}, and frames to the guest would not be delivered there." in message
    assert "The node agent cannot read the target pod's links" in message


def test_a_pinned_macvtap_vmi_needs_no_fixer_to_migrate() -> None:
    """facts V6: the target's device carries the spec's MAC, and the address stays valid on its L2."""
    api = sidecar_api()
    api.vmis["demo/web-1"] = running(mac="02:00:00:00:00:0a")
    response = run(admit_once(replace(BASE, validation="strict"), api, MIGRATIONS, migration()))
    assert response["allowed"] is True and "warnings" not in response


def test_a_core_macvtap_vmi_is_not_ours_to_judge_at_migration() -> None:
    api = sidecar_api()
    api.vmis["demo/web-1"] = vmi(interfaces=[{"name": "lan", "macvtap": {}}], networks=[LAN])
    response = run(admit_once(replace(BASE, validation="strict"), api, MIGRATIONS, migration()))
    assert response["allowed"] is True and "warnings" not in response
