"""KubeVirt's CRDs, cut down to what admission needs.

Group, versions, names, short names and scope match KubeVirt's; the schemas are left open
(x-kubernetes-preserve-unknown-fields) because KubeVirt's full ones are tens of thousands of lines and
admission does not look at them. Facts from KubeVirt's API, written afresh here.
"""

from __future__ import annotations

from typing import Any

_OPEN_SCHEMA: dict[str, Any] = {
    "openAPIV3Schema": {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    }
}


def _crd(
    *, plural: str, kind: str, singular: str, short_names: list[str], categories: list[str], status: bool
) -> dict[str, Any]:
    version: dict[str, Any] = {"name": "v1", "served": True, "storage": True, "schema": _OPEN_SCHEMA}
    if status:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.kubevirt.io"},
        "spec": {
            "group": "kubevirt.io",
            "scope": "Namespaced",
            "names": {
                "plural": plural,
                "singular": singular,
                "kind": kind,
                "listKind": f"{kind}List",
                "shortNames": short_names,
                "categories": categories,
            },
            "versions": [version],
        },
    }


def kubevirt_crds() -> list[dict[str, Any]]:
    """VirtualMachineInstance, VirtualMachine, VirtualMachineInstanceMigration and KubeVirt (the install CR)."""
    return [
        _crd(
            plural="virtualmachineinstances",
            kind="VirtualMachineInstance",
            singular="virtualmachineinstance",
            short_names=["vmi", "vmis"],
            categories=["all"],
            # As KubeVirt's: no status subresource, so status writes are UPDATEs of the whole
            # VMI (docs/kubevirt-facts.md K1).
            status=False,
        ),
        _crd(
            plural="virtualmachines",
            kind="VirtualMachine",
            singular="virtualmachine",
            short_names=["vm", "vms"],
            categories=["all"],
            status=True,
        ),
        _crd(
            plural="virtualmachineinstancemigrations",
            kind="VirtualMachineInstanceMigration",
            singular="virtualmachineinstancemigration",
            short_names=["vmim", "vmims"],
            categories=["all"],
            status=True,
        ),
        _crd(
            plural="kubevirts",
            kind="KubeVirt",
            singular="kubevirt",
            short_names=["kv", "kvs"],
            categories=["all"],
            status=True,
        ),
    ]


CRD_NAMES = tuple(crd["metadata"]["name"] for crd in kubevirt_crds())


def install_crds(kubectl: Any) -> None:
    """Apply the CRDs and wait until the API server serves them."""
    kubectl.apply(kubevirt_crds())
    kubectl.run("wait", "--for=condition=Established", "--timeout=120s", *[f"crd/{n}" for n in CRD_NAMES])
