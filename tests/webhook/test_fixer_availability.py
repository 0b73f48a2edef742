"""A VMI is never made migratable without a fixer that will act (issue 25).

Node delivery acts only where a node agent is deployed (``--node-agent``, the chart's
``node.enabled``) and KubeVirt's ``Plugins`` gate is on: without the gate virt-handler calls no node
hook at all (docs/kubevirt-facts.md P13). Inject delivery acts only in non-root launchers, and with
KubeVirt's ``Root`` gate on virt-api makes every VMI root unless it carries ``kubevirt.io/nonroot``
(facts L11). Such a VMI is admitted exactly as written (no allow annotation, no pinned MAC, no record),
and the user is told why. The gates are read from the KubeVirt CR, as the Sidecar gate is.

The API is the NAMED FAKE of tests/webhook/kubevirt_api.py (the CR's gates on demand).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import httpx
import pytest

from bridge_migration_contract import ALLOW_POD_BRIDGE_MIGRATION
from tests.webhook.kubevirt_api import FakeKubeVirtApi, admit, admit_once, patch_of, runtime
from tests.webhook.vmis import vmi
from webhook.app import create_app
from webhook.cli import config_from_args
from webhook.config import WebhookConfig

DELIVERY = "bridge-migration.kubevirt.io/delivery"
MACVTAP = [{"name": "lan", "binding": {"name": "macvtap"}}]
MULTUS = [{"name": "lan", "multus": {"networkName": "lan-net"}}]
VMIS = "mutate/virtualmachineinstances"
VMS = "mutate/virtualmachines"
MIGRATIONS = "validate/virtualmachineinstancemigrations"
BASE = WebhookConfig(dev=True)


def with_agent(**changes: Any) -> WebhookConfig:
    """``--node-agent``: the chart's node.enabled deployed one."""
    return replace(config_from_args(["--dev", "--node-agent"]), **changes)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def vm_of(template: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": template["metadata"]["name"], "namespace": "demo"},
        "spec": {"template": {"metadata": {"annotations": template["metadata"].get("annotations", {})},
                              "spec": template["spec"]}},
    }  # fmt: skip


def migration(*, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": "move", "namespace": "demo", "annotations": annotations or {}},
        "spec": {"vmiName": "web-1"},
    }


def assert_left_as_written(response: dict[str, Any], *expected: str) -> str:
    """Admitted, no patch at all, one warning of ours naming ``expected``; that warning."""
    assert response["allowed"] is True
    assert patch_of(response) == []
    [warning] = response["warnings"]
    assert warning.startswith("bridge-migration: ")
    assert "stays non-migratable" in warning
    for part in expected:
        assert part in warning, warning
    return warning


# --- node delivery --------------------------------------------------------------------------------


def test_the_webhook_has_a_node_agent_switch_off_by_default() -> None:
    assert with_agent().node_agent is True
    assert config_from_args(["--dev"]).node_agent is False


def test_a_user_set_delivery_node_without_a_node_agent_is_left_as_written_and_says_why() -> None:
    api = FakeKubeVirtApi(gates=["Plugins"])
    obj = vmi(annotations={DELIVERY: "node"})
    response = run(admit_once(BASE, api, VMIS, obj))
    assert_left_as_written(response, "VMI demo/web-1", "no node agent", "node.enabled")


def test_node_delivery_with_the_plugins_gate_off_is_left_as_written_and_says_why() -> None:
    api = FakeKubeVirtApi(gates=["Sidecar"])
    response = run(admit_once(with_agent(delivery="node"), api, VMIS, vmi()))
    assert_left_as_written(response, "Plugins feature gate is off", "calls no node hook")


def test_node_delivery_with_the_plugins_gate_unread_counts_as_off() -> None:
    api = FakeKubeVirtApi(gates=["Plugins"], status=503)
    response = run(admit_once(with_agent(delivery="node"), api, VMIS, vmi()))
    assert_left_as_written(response, "Plugins feature gate could not be read")


def test_node_delivery_on_kubevirt_before_v1_9_is_left_as_written() -> None:
    api = FakeKubeVirtApi(gates=["Plugins"], version="v1.8.4")
    response = run(admit_once(with_agent(delivery="node"), api, VMIS, vmi()))
    assert_left_as_written(response, "KubeVirt v1.8.4 has no node hooks")


def test_node_delivery_with_an_agent_and_the_plugins_gate_is_made_migratable() -> None:
    api = FakeKubeVirtApi(gates=["Plugins"])
    response = run(admit_once(with_agent(delivery="node"), api, VMIS, vmi()))
    assert response["allowed"] is True and "warnings" not in response
    added = {op["path"]: op.get("value") for op in patch_of(response)}
    assert added["/metadata/annotations"][ALLOW_POD_BRIDGE_MIGRATION] == "true"
    assert added["/metadata/annotations"][DELIVERY] == "node"


def test_a_vm_asking_for_node_delivery_without_an_agent_keeps_its_template_as_written() -> None:
    api = FakeKubeVirtApi(gates=["Plugins"])
    response = run(admit_once(BASE, api, VMS, vm_of(vmi(annotations={DELIVERY: "node"}))))
    assert_left_as_written(response, "VM demo/web-1", "no node agent")


def test_a_macvtap_vmi_with_a_user_set_node_record_and_no_agent_is_warned_at_migration() -> None:
    """macvtap needs no allow annotation to migrate: the record alone must not count as a fixer."""
    api = FakeKubeVirtApi(gates=["Plugins"])
    api.vmis["demo/web-1"] = vmi(interfaces=MACVTAP, networks=MULTUS, annotations={DELIVERY: "node"})
    response = run(admit_once(replace(BASE, validation="strict"), api, MIGRATIONS, migration()))
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert "records delivery node" in message and "no node agent" in message
    assert "would keep a stale IP" in message


# --- inject delivery on root launchers ------------------------------------------------------------


def test_with_the_root_gate_on_auto_delivery_by_injection_is_left_as_written_and_says_why() -> None:
    api = FakeKubeVirtApi(gates=["Root"])  # Sidecar off: auto resolves to inject
    response = run(admit_once(BASE, api, VMIS, vmi()))
    assert_left_as_written(response, "VMI demo/web-1", "Root feature gate is on", "run as root")


def test_with_the_root_gate_on_a_user_set_delivery_inject_is_left_as_written() -> None:
    api = FakeKubeVirtApi(gates=["Sidecar", "Root"])
    response = run(admit_once(BASE, api, VMIS, vmi(annotations={DELIVERY: "inject"})))
    assert_left_as_written(response, "Root feature gate is on")


def test_with_the_root_gate_on_a_vms_template_is_left_as_written() -> None:
    api = FakeKubeVirtApi(gates=["Root"])
    response = run(admit_once(BASE, api, VMS, vm_of(vmi())))
    assert_left_as_written(response, "VM demo/web-1", "Root feature gate is on")


def test_with_the_root_gate_on_a_vmi_marked_nonroot_is_still_injected() -> None:
    """virt-launcher runs non-root for a VMI carrying kubevirt.io/nonroot whatever the gate says."""
    api = FakeKubeVirtApi(gates=["Root"])
    response = run(admit_once(BASE, api, VMIS, vmi(annotations={"kubevirt.io/nonroot": ""})))
    added = {op["path"]: op.get("value") for op in patch_of(response)}
    assert added[f"/metadata/annotations/{DELIVERY.replace('/', '~1')}"] == "inject"


def test_with_the_root_gate_on_hook_delivery_is_unaffected() -> None:
    api = FakeKubeVirtApi(gates=["Sidecar", "Root"])
    response = run(admit_once(BASE, api, VMIS, vmi()))
    assert patch_of(response) and "warnings" not in response


@pytest.mark.parametrize("gates", [[], ["Sidecar"]])
def test_without_the_root_gate_injection_goes_on(gates: list[str]) -> None:
    response = run(admit_once(BASE, FakeKubeVirtApi(gates=gates), VMIS, vmi()))
    assert patch_of(response)


def test_the_gates_are_read_once_per_refresh_period_like_the_sidecar_gate() -> None:
    api = FakeKubeVirtApi(gates=["Root"])
    rt = runtime(BASE, api)

    async def twice() -> list[dict[str, Any]]:
        try:
            return [await admit(rt, VMIS, vmi(name=name)) for name in ("a", "b")]
        finally:
            assert rt.kube is not None
            await rt.kube.aclose()

    for response in run(twice()):
        assert "Root feature gate is on" in response["warnings"][0]
    assert api.paths == ["/apis/kubevirt.io/v1/kubevirts"]


def test_readyz_shows_what_inject_and_node_delivery_need() -> None:
    rt = runtime(with_agent(), FakeKubeVirtApi(gates=["Plugins"]))

    async def go() -> dict[str, Any]:
        assert rt.kube is not None
        await rt.gate.refresh()
        await rt.kube.aclose()
        transport = httpx.ASGITransport(app=create_app(rt, background=False))
        async with httpx.AsyncClient(transport=transport, base_url="https://webhook") as client:
            body: dict[str, Any] = (await client.get("/readyz")).json()
            return body

    ready = run(go())
    assert (ready["pluginsGate"], ready["rootGate"], ready["nodeAgent"]) == (True, False, True)
