"""KubeVirt's CRDs for kubelab, with KubeVirt's own structural schemas.

Group, versions, names, short names, scope and subresources are KubeVirt's (docs/kubevirt-facts.md
K1), written afresh here. The ``openAPIV3Schema`` of each kind is the one KubeVirt ships:
``scripts/build-crds.sh`` runs controller-gen once over ``kubevirt.io/api/core/v1`` and
``plugin/v1alpha1`` (node mode's Plugin) as KubeVirt's own build does, and this module takes the
schema out of controller-gen's CRD for the kind, as virt-operator does, so kube-apiserver prunes,
defaults and validates our objects as a cluster's would (facts K8). The generated files live in the
cache, never in the repo; without them ``kubevirt_crds`` and ``plugin_crd`` raise, so a kube test
fails rather than running on open schemas.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kubelab.tools import CRDS_SCRIPT, CrdSchemasMissingError, find_crd_dir


def generated_schema(plural: str, crd_dir: Path | None = None) -> dict[str, Any]:
    """The validation of controller-gen's CRD for ``plural`` (its first version, as virt-operator takes it)."""
    path = (crd_dir or find_crd_dir()) / f"kubevirt.io_{plural}.yaml"
    if not path.is_file():
        raise CrdSchemasMissingError(f"{path} is missing: run scripts/build-crds.sh")
    crd = yaml.safe_load(path.read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]
    if "openAPIV3Schema" not in schema:
        raise CrdSchemasMissingError(f"{path} has no openAPIV3Schema")
    return schema


def _crd(
    *,
    plural: str,
    kind: str,
    singular: str,
    short_names: list[str],
    categories: list[str],
    status: bool,
    crd_dir: Path | None,
) -> dict[str, Any]:
    schema = generated_schema(plural, crd_dir)
    version: dict[str, Any] = {"name": "v1", "served": True, "storage": True, "schema": schema}
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


def kubevirt_crds(crd_dir: Path | None = None) -> list[dict[str, Any]]:
    """VirtualMachineInstance, VirtualMachine, VirtualMachineInstanceMigration and KubeVirt (the install CR).

    ``crd_dir`` is where ``scripts/build-crds.sh`` wrote controller-gen's output (default: the cache).
    """
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
            crd_dir=crd_dir,
        ),
        _crd(
            plural="virtualmachines",
            kind="VirtualMachine",
            singular="virtualmachine",
            short_names=["vm", "vms"],
            categories=["all"],
            status=True,
            crd_dir=crd_dir,
        ),
        _crd(
            plural="virtualmachineinstancemigrations",
            kind="VirtualMachineInstanceMigration",
            singular="virtualmachineinstancemigration",
            short_names=["vmim", "vmims"],
            categories=["all"],
            status=True,
            crd_dir=crd_dir,
        ),
        _crd(
            plural="kubevirts",
            kind="KubeVirt",
            singular="kubevirt",
            short_names=["kv", "kvs"],
            categories=["all"],
            status=True,
            crd_dir=crd_dir,
        ),
    ]


CRD_NAMES = tuple(
    f"{plural}.kubevirt.io"
    for plural in ("virtualmachineinstances", "virtualmachines", "virtualmachineinstancemigrations", "kubevirts")
)


def install_crds(kubectl: Any, crd_dir: Path | None = None) -> None:
    """Apply the CRDs and wait until the API server serves them.

    Server-side apply: the generated CRDs are larger than the 256 KiB that client-side apply's
    last-applied annotation may hold.
    """
    kubectl.apply(kubevirt_crds(crd_dir), extra=["--server-side"])
    kubectl.run("wait", "--for=condition=Established", "--timeout=120s", *[f"crd/{n}" for n in CRD_NAMES])


def plugin_crd(*, build: bool = True, crd_dir: Path | None = None) -> dict[str, Any]:
    """KubeVirt v1.9's Plugin CRD (node mode): KubeVirt's names and scope (cluster-scoped, facts P1),
    the schema controller-gen generates from ``kubevirt.io/api/plugin/v1alpha1``, found beside the
    core kinds' (``find_crd_dir``; ``scripts/build-crds.sh`` runs first when ``build``: a no-op
    once cached)."""
    path = (crd_dir or find_crd_dir(build=build)) / "plugin.kubevirt.io_plugins.yaml"
    if not path.is_file():
        raise CrdSchemasMissingError(f"{path} is missing: run {CRDS_SCRIPT}")
    generated = yaml.safe_load(path.read_text())
    schema: dict[str, Any] = generated["spec"]["versions"][0]["schema"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "plugins.plugin.kubevirt.io"},
        "spec": {
            "group": "plugin.kubevirt.io",
            # controller-gen says Namespaced (no scope marker); virt-operator's NewPluginCrd
            # installs it ClusterScoped.
            "scope": "Cluster",
            "names": {"plural": "plugins", "singular": "plugin", "kind": "Plugin", "listKind": "PluginList"},
            "versions": [{"name": "v1alpha1", "served": True, "storage": True, "schema": schema}],
        },
    }


NAD_CRD_NAME = "network-attachment-definitions.k8s.cni.cncf.io"


def network_attachment_definition_crd() -> dict[str, Any]:
    """Multus's NetworkAttachmentDefinition CRD, for manifests that carry one (examples/).

    Group, version, names, scope and the schema's fields are those of the Network Plumbing Working
    Group's CRD (k8snetworkplumbingwg/network-attachment-definition-client, ``artifacts/networks-crd.yaml``),
    written afresh here: ``spec.config`` is a required string (a CNI configuration as JSON, which the
    API server does not parse), and the object requires ``spec``.
    """
    string = {"type": "string"}
    schema = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": string,
            "kind": string,
            "metadata": {"type": "object"},
            "spec": {"type": "object", "required": ["config"], "properties": {"config": string}},
            "status": {"type": "object", "properties": {"state": string, "observation": string}},
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": NAD_CRD_NAME},
        "spec": {
            "group": "k8s.cni.cncf.io",
            "scope": "Namespaced",
            "names": {
                "plural": "network-attachment-definitions",
                "singular": "network-attachment-definition",
                "kind": "NetworkAttachmentDefinition",
                "listKind": "NetworkAttachmentDefinitionList",
                "shortNames": ["net-attach-def"],
            },
            "versions": [
                {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}},
            ],
        },
    }


def install_network_attachment_definition_crd(kubectl: Any) -> None:
    """Apply the NetworkAttachmentDefinition CRD and wait until the API server serves it."""
    kubectl.apply(network_attachment_definition_crd())
    kubectl.run("wait", "--for=condition=Established", "--timeout=120s", f"crd/{NAD_CRD_NAME}")
