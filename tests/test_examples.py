"""examples/: what a user applies first, kept whole and kept true to the README.

The shape of every manifest (its namespace created in the same file, every NIC with its network, every
Multus network with its NetworkAttachmentDefinition, each NAD's CNI configuration) is checked here, and
the webhook, the real app in process, admits each KubeVirt object as the README says. That every
object is valid against KubeVirt's CRD schemas is for the API server to say: tests/kube/test_examples.py
runs them through kube-apiserver with kubelab's CRDs.
"""

from __future__ import annotations

import asyncio
import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from bridge_migration_contract import ALLOW_POD_BRIDGE_MIGRATION, DEFAULT_KEYS, HOOK_SIDECARS, parse_macs
from tests.webhook.kubevirt_api import FakeKubeVirtApi, admit_once, patch_of
from webhook.config import WebhookConfig
from webhook.macs import pinned_mac

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.yaml"))
# Read by kubelab/webhook_demo.py (scripts/demo.sh) with yaml.safe_load: one document each, a VMI in
# namespace demo that the reader creates (kubelab's demo) or that exists.
SINGLE_DOCUMENT = ("vmi-bridge.yaml", "vmi-masquerade.yaml")
KUBEVIRT_KINDS = ("VirtualMachine", "VirtualMachineInstance")
IMAGE = "registry.example/bridge-migration:examples"
NAD_RESOURCE_NAME = "k8s.v1.cni.cncf.io/resourceName"
MACVTAP_RESOURCE_PREFIX = "macvtap.network.kubevirt.io/"


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kubevirt_objects(*kinds: str) -> list[Any]:
    """Each VM and VMI of examples/ (of ``kinds`` when given) as a pytest param (file name, object)."""
    return [
        pytest.param(p.name, doc, id=f"{p.name}:{doc['metadata']['name']}")
        for p in EXAMPLES
        for doc in load(p)
        if doc["kind"] in (kinds or KUBEVIRT_KINDS)
    ]


def vmi_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"] if obj["kind"] == "VirtualMachine" else obj["spec"]
    return spec


def vmi_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    """Where the webhook writes its annotations: the VM's template, or the VMI itself."""
    meta: dict[str, Any] = (
        obj["spec"]["template"].get("metadata", {}) if obj["kind"] == "VirtualMachine" else obj["metadata"]
    )
    return meta


@dataclass(frozen=True)
class Expected:
    """What the README says the webhook does to an example: the NICs whose MAC it pins, and whether
    the object gets KubeVirt's allow annotation (a bridge NIC on the pod network)."""

    pinned: tuple[str, ...]
    allow: bool


# Written from the README, not from the webhook's code: a bridge NIC on the pod network or on a
# Multus network and a macvtap-plugin NIC get a pinned MAC; only the pod-network bridge needs the
# allow annotation ("macvtap VMs": KubeVirt already migrates those); masquerade is left alone.
EXPECTED: dict[tuple[str, str], Expected] = {
    ("vm-pod-bridge.yaml", "debian-bridge"): Expected(pinned=("default",), allow=True),
    ("vm-networkmanager.yaml", "fedora-nm"): Expected(pinned=("default",), allow=True),
    ("vm-multus-bridge.yaml", "debian-vlan"): Expected(pinned=("default", "vlan100"), allow=True),
    ("vm-macvtap.yaml", "debian-macvtap"): Expected(pinned=("lan",), allow=False),
    ("vmi-bridge.yaml", "web-1"): Expected(pinned=("default",), allow=True),
    ("vmi-masquerade.yaml", "db-1"): Expected(pinned=(), allow=False),
}


def test_the_examples_the_readers_are_promised_are_there() -> None:
    # Issue 26: VMs on the pod network, with a NetworkManager guest, with a Multus bridge and its NAD.
    names = {p.name for p in EXAMPLES}
    assert {"vm-pod-bridge.yaml", "vm-networkmanager.yaml", "vm-multus-bridge.yaml", *SINGLE_DOCUMENT} <= names
    assert {(param.values[0], param.values[1]["metadata"]["name"]) for param in kubevirt_objects()} == set(EXPECTED)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_document_is_a_named_object_with_an_api_version(path: Path) -> None:
    docs = load(path)
    assert docs, f"{path.name} holds no object"
    for doc in docs:
        api_version = doc.get("apiVersion")
        assert isinstance(api_version, str) and ("/" in api_version or api_version == "v1")
        assert isinstance(doc.get("kind"), str)
        assert isinstance(doc["metadata"].get("name"), str)
    if path.name in SINGLE_DOCUMENT:
        assert len(docs) == 1, f"{path.name} is read with yaml.safe_load by kubelab/webhook_demo.py"


@pytest.mark.parametrize("path", [p for p in EXAMPLES if p.name not in SINGLE_DOCUMENT], ids=lambda p: p.name)
def test_each_example_creates_its_namespace_before_the_objects_in_it(path: Path) -> None:
    created: set[str] = set()
    for doc in load(path):
        if doc["kind"] == "Namespace":
            created.add(doc["metadata"]["name"])
        else:
            namespace = doc["metadata"].get("namespace")
            assert namespace in created, f"{doc['kind']} {doc['metadata']['name']}: namespace {namespace!r}"


@pytest.mark.parametrize(("path", "obj"), kubevirt_objects())
def test_every_nic_has_its_network_and_every_network_its_nic(path: str, obj: dict[str, Any]) -> None:
    # KubeVirt pairs each interface with the network of its name; the CRD schema cannot say so.
    spec = vmi_spec(obj)
    interfaces = [i["name"] for i in spec["domain"]["devices"]["interfaces"]]
    networks = [n["name"] for n in spec["networks"]]
    assert sorted(interfaces) == sorted(networks) and len(set(interfaces)) == len(interfaces)


def _nads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == "NetworkAttachmentDefinition"]


@pytest.mark.parametrize("path", [p for p in EXAMPLES if _nads(load(p))], ids=lambda p: p.name)
def test_every_network_attachment_definition_holds_a_cni_configuration(path: Path) -> None:
    for nad in _nads(load(path)):
        assert nad["apiVersion"] == "k8s.cni.cncf.io/v1"
        config = json.loads(nad["spec"]["config"])
        assert isinstance(config, dict)
        assert isinstance(config.get("cniVersion"), str) and config["cniVersion"]
        assert isinstance(config.get("type"), str) and config["type"]
        assert config.get("name") == nad["metadata"]["name"]
        if config["type"] == "bridge":
            # No IPAM: the guest takes its address from the VLAN's DHCP server, not the CNI.
            assert "ipam" not in config
            assert isinstance(config["bridge"], str) and isinstance(config["vlan"], int)
        if config["type"] == "macvtap":
            resource = nad["metadata"]["annotations"][NAD_RESOURCE_NAME]
            assert resource.startswith(MACVTAP_RESOURCE_PREFIX) and resource != MACVTAP_RESOURCE_PREFIX


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_multus_network_names_a_network_attachment_definition_of_the_same_file(path: Path) -> None:
    docs = load(path)
    nads = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in _nads(docs)}
    for obj in (d for d in docs if d["kind"] in KUBEVIRT_KINDS):
        for network in vmi_spec(obj)["networks"]:
            if "multus" in network:
                ref = network["multus"]["networkName"]
                namespace, _, name = ref.rpartition("/")
                assert (namespace or obj["metadata"]["namespace"], name) in nads, ref


def _admit(obj: dict[str, Any], *, gate: bool) -> tuple[dict[str, Any], list[str]]:
    endpoint = "mutate/virtualmachines" if obj["kind"] == "VirtualMachine" else "mutate/virtualmachineinstances"
    api = FakeKubeVirtApi(gates=["Sidecar"] if gate else [])
    response = asyncio.run(admit_once(WebhookConfig(sidecar_image=IMAGE), api, endpoint, obj))
    assert response["allowed"] is True
    return jsonpatch.apply_patch(obj, patch_of(response)), list(response.get("warnings") or [])


@pytest.mark.parametrize("gate", [True, False], ids=["sidecar-gate-on", "sidecar-gate-off"])
@pytest.mark.parametrize(("path", "obj"), kubevirt_objects())
def test_the_webhook_admits_each_example_as_the_readme_says(path: str, obj: dict[str, Any], gate: bool) -> None:
    expected = EXPECTED[(path, obj["metadata"]["name"])]
    namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    stored, warnings = _admit(obj, gate=gate)
    if not expected.pinned:
        assert stored == obj, "masquerade only: the webhook changes nothing"
        assert warnings == []
        return
    interfaces = vmi_spec(stored)["domain"]["devices"]["interfaces"]
    macs = {i["name"]: i.get("macAddress") for i in interfaces}
    wanted = {i: pinned_mac(namespace=namespace, vmi_name=name, interface=i) for i in expected.pinned}
    assert {i: macs[i] for i in expected.pinned} == wanted
    assert all(mac is None for i, mac in macs.items() if i not in expected.pinned)
    ann = vmi_metadata(stored)["annotations"]
    assert parse_macs(ann[DEFAULT_KEYS.macs]) == wanted
    assert (ann.get(ALLOW_POD_BRIDGE_MIGRATION) == "true") is expected.allow
    # No example asks for a NIC refresh (NetworkManager guest included): each gets auto, the default.
    assert DEFAULT_KEYS.nic_refresh not in (vmi_metadata(obj).get("annotations") or {})
    assert ann.get(DEFAULT_KEYS.nic_refresh, "auto") == "auto"
    if gate:  # the fixer: our hook sidecar
        assert [e["image"] for e in json.loads(ann[HOOK_SIDECARS])] == [IMAGE]
        assert warnings == []
    else:  # delivery auto without the gate: the webhook injects the fixer itself, and says so
        assert HOOK_SIDECARS not in ann
        assert ann[DEFAULT_KEYS.delivery] == "inject"
        assert ann[DEFAULT_KEYS.interfaces].split(",") == sorted(expected.pinned)
        assert len(warnings) == 1 and "made migratable with delivery inject" in warnings[0]
    # Admitted again, what the webhook made needs nothing more.
    again, _ = _admit(stored, gate=gate)
    assert again == stored


@pytest.mark.parametrize(("path", "obj"), kubevirt_objects("VirtualMachine"))
def test_the_vmi_virt_controller_makes_from_each_example_vm_is_admitted_unchanged(
    path: str, obj: dict[str, Any]
) -> None:
    stored, _ = _admit(obj, gate=True)
    template = copy.deepcopy(stored["spec"]["template"])
    vmi = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": obj["metadata"]["name"], "namespace": obj["metadata"]["namespace"]},
        "spec": template["spec"],
    }
    vmi["metadata"].update(template.get("metadata", {}))
    made, warnings = _admit(vmi, gate=True)
    assert made == vmi
    assert warnings == []
