"""An UPDATE says nothing the CREATE already said: warnings are for the create, not for every edit.

Through the real routes: each `kubectl apply` or `kubectl edit` of a VM or VMI is an UPDATE review,
and its warnings are printed to whoever ran it, every time.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from typing import Any

import httpx
import jsonpatch

from bridge_migration_contract import dump_macs
from kubelab.reviews import make_review
from tests.webhook.vmis import vmi
from webhook.app import Runtime, create_app
from webhook.config import WebhookConfig
from webhook.kube import SidecarGateCache

# The Sidecar gate off with delivery hook: a VM or VMI stays unchanged, with a warning at CREATE.
RT = Runtime(config=WebhookConfig(dev=True, delivery="hook"), gate=SidecarGateCache(None, forced=False, refresh_s=30))


def answer(path: str, review: dict[str, Any]) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=create_app(RT, background=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            body: dict[str, Any] = (await client.post(path, json=review)).json()
            return body["response"]  # type: ignore[no-any-return]

    return asyncio.run(go())


def a_vm() -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "web-1", "namespace": "demo"},
        "spec": {"runStrategy": "Always", "template": {"spec": copy.deepcopy(vmi()["spec"])}},
    }


def test_a_vm_created_with_the_gate_off_is_warned_about_once() -> None:
    created = answer("/mutate/virtualmachines", make_review(a_vm()))
    assert "patch" not in created and "Sidecar feature gate is off" in created["warnings"][0]


def test_an_update_of_that_vm_gets_no_warnings_again() -> None:
    edited = a_vm()
    edited["metadata"]["labels"] = {"tier": "web"}
    updated = answer("/mutate/virtualmachines", make_review(edited, operation="UPDATE", old=a_vm()))
    assert updated["allowed"] is True
    assert "warnings" not in updated and "patch" not in updated


def test_a_vmi_created_with_the_gate_off_is_warned_about_once() -> None:
    created = answer("/mutate/virtualmachineinstances", make_review(vmi()))
    assert "patch" not in created and "Sidecar feature gate is off" in created["warnings"][0]


def test_an_update_of_a_vmi_gets_no_warnings_again() -> None:
    edited = vmi()
    edited["metadata"]["labels"]["tier"] = "web"
    updated = answer("/mutate/virtualmachineinstances", make_review(edited, operation="UPDATE", old=vmi()))
    assert updated["allowed"] is True
    assert "warnings" not in updated and "patch" not in updated


def test_a_reapply_of_a_vmi_that_dropped_our_pinned_mac_gets_it_back_and_nothing_said() -> None:
    mac = "02:5e:10:00:00:01"
    stored = vmi(annotations={"bridge-migration.kubevirt.io/macs": dump_macs({"default": mac})})
    stored["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"] = mac
    reapplied = copy.deepcopy(stored)
    del reapplied["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"]
    updated = answer("/mutate/virtualmachineinstances", make_review(reapplied, operation="UPDATE", old=stored))
    assert "warnings" not in updated
    patch = json.loads(base64.b64decode(updated["patch"]))
    assert jsonpatch.apply_patch(reapplied, patch) == stored
