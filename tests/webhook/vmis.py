"""VMI shapes the webhook tests share, written as a user would write them."""

from __future__ import annotations

import copy
from typing import Any

BRIDGE_VMI: dict[str, Any] = {
    "apiVersion": "kubevirt.io/v1",
    "kind": "VirtualMachineInstance",
    "metadata": {"name": "web-1", "namespace": "demo", "labels": {"app": "web"}},
    "spec": {
        "domain": {"devices": {"interfaces": [{"name": "default", "bridge": {}}]}},
        "networks": [{"name": "default", "pod": {}}],
    },
}


def vmi(
    *,
    interfaces: list[dict[str, Any]] | None = None,
    networks: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
    name: str = "web-1",
    namespace: str = "demo",
) -> dict[str, Any]:
    obj = copy.deepcopy(BRIDGE_VMI)
    obj["metadata"]["name"] = name
    obj["metadata"]["namespace"] = namespace
    if interfaces is not None:
        obj["spec"]["domain"]["devices"]["interfaces"] = interfaces
    if networks is not None:
        obj["spec"]["networks"] = networks
    if annotations is not None:
        obj["metadata"]["annotations"] = annotations
    return obj


def masquerade_vmi() -> dict[str, Any]:
    return vmi(interfaces=[{"name": "default", "masquerade": {}}])
