"""Every manifest in examples/ as kube-apiserver takes it: valid against KubeVirt's own CRD schemas.

``kubectl apply --dry-run=server`` of each file, unchanged, against the session's control plane: the API
server validates each VirtualMachine and VirtualMachineInstance with the structural schema controller-gen
makes from ``kubevirt.io/api`` (kubelab/crds.py), with kubectl's strict field validation, so a misspelt
or misplaced field is refused by name; the chart's webhooks and the fake virt-api run on the dry run as
on a create. Nothing is stored but the namespaces (a dry-run Namespace is not there for the objects in
it). The NetworkAttachmentDefinitions go through Multus's CRD (kubelab/crds.py); their CNI JSON is
checked in tests/test_examples.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge_migration_contract import ALLOW_POD_BRIDGE_MIGRATION, DEFAULT_KEYS, HOOK_SIDECARS, parse_macs
from kubelab.crds import install_network_attachment_definition_crd
from kubelab.kubectl import Kubectl, KubectlError, to_yaml
from kubelab.lab import SIDECAR_IMAGE, AdmissionLab
from tests.test_examples import EXAMPLES, EXAMPLES_DIR, EXPECTED, KUBEVIRT_KINDS, load, vmi_metadata, vmi_spec

pytestmark = pytest.mark.kube


@pytest.fixture(scope="module")
def nad_crd(lab: AdmissionLab) -> None:
    install_network_attachment_definition_crd(lab.kubectl)


def server_dry_run(kubectl: Kubectl, text: str) -> tuple[list[dict[str, Any]], str]:
    """``kubectl apply --dry-run=server -o json -f -`` of ``text`` after creating the namespaces its
    objects live in; the objects as the API server would store them, and kubectl's stderr."""
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    for namespace in sorted({d["metadata"]["namespace"] for d in docs if "namespace" in d["metadata"]}):
        kubectl.create_namespace(namespace)
    result = kubectl.run("apply", "--dry-run=server", "-o", "json", "-f", "-", stdin=text)
    out = json.loads(result.stdout)
    items: list[dict[str, Any]] = out["items"] if out.get("kind") == "List" else [out]
    return items, result.stderr


def contains(stored: Any, written: Any, path: str = "") -> list[str]:
    """Where ``stored`` lost or changed what ``written`` says (pruned, defaulted over, retyped)."""
    if isinstance(written, dict):
        if not isinstance(stored, dict):
            return [path or "."]
        return [p for k, v in written.items() for p in contains(stored.get(k), v, f"{path}.{k}")]
    if isinstance(written, list):
        if not isinstance(stored, list) or len(stored) != len(written):
            return [path]
        return [p for i, (s, w) in enumerate(zip(stored, written, strict=True)) for p in contains(s, w, f"{path}[{i}]")]
    return [] if stored == written else [path]


@pytest.mark.usefixtures("nad_crd")
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_passes_kube_apiserver_with_kubevirts_crd_schemas_and_no_warning(
    kubectl: Kubectl, path: Path
) -> None:
    written = load(path)
    items, stderr = server_dry_run(kubectl, path.read_text())
    assert [(i["kind"], i["metadata"]["name"]) for i in items] == [(d["kind"], d["metadata"]["name"]) for d in written]
    assert "Warning" not in stderr, stderr
    for obj, stored in zip(written, items, strict=True):
        # Strict validation refuses unknown fields; this also catches a field the schema would drop
        # or a value it would turn into another.
        assert contains(stored, obj) == [], f"{obj['kind']} {obj['metadata']['name']}"


@pytest.mark.usefixtures("nad_crd")
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_through_the_api_server_each_example_gets_what_the_readme_says(kubectl: Kubectl, path: Path) -> None:
    items, _ = server_dry_run(kubectl, path.read_text())
    for stored in (i for i in items if i["kind"] in KUBEVIRT_KINDS):
        expected = EXPECTED[(path.name, stored["metadata"]["name"])]
        macs = {i["name"]: i.get("macAddress") for i in vmi_spec(stored)["domain"]["devices"]["interfaces"]}
        ann = vmi_metadata(stored).get("annotations") or {}
        if not expected.pinned:
            assert not any(k.startswith(DEFAULT_KEYS.prefix) or k == HOOK_SIDECARS for k in ann), ann
            assert set(macs.values()) == {None}
            continue
        assert parse_macs(ann[DEFAULT_KEYS.macs]) == {i: macs[i] for i in expected.pinned}
        assert (ann.get(ALLOW_POD_BRIDGE_MIGRATION) == "true") is expected.allow
        assert [e["image"] for e in json.loads(ann[HOOK_SIDECARS])] == [SIDECAR_IMAGE]


@pytest.mark.usefixtures("nad_crd")
@pytest.mark.parametrize(
    ("path", "good", "bad", "field"),
    [
        ("vm-pod-bridge.yaml", "runStrategy:", "runStrategi:", "spec.runStrategi"),
        (
            "vm-multus-bridge.yaml",
            "networkName: vlan100",
            "networkname: vlan100",
            "spec.template.spec.networks[1].multus.networkname",
        ),
        (
            "vm-networkmanager.yaml",
            "            userData: |",
            "            userdata: |",
            "spec.template.spec.volumes[1].cloudInitNoCloud.userdata",
        ),
        ("vmi-bridge.yaml", "      requests:", "      request:", "spec.domain.resources.request"),
    ],
)
def test_a_misspelt_field_in_an_example_is_refused_by_name(
    kubectl: Kubectl, path: str, good: str, bad: str, field: str
) -> None:
    text = (EXAMPLES_DIR / path).read_text()
    assert text.count(good) == 1
    with pytest.raises(KubectlError, match=f'unknown field "{re.escape(field)}"'):
        server_dry_run(kubectl, text.replace(good, bad))


@pytest.mark.usefixtures("nad_crd")
def test_a_misspelt_field_of_a_network_attachment_definition_is_refused(kubectl: Kubectl) -> None:
    docs = load(EXAMPLES_DIR / "vm-multus-bridge.yaml")
    nad = next(d for d in docs if d["kind"] == "NetworkAttachmentDefinition")
    nad["spec"] = {"conifg": nad["spec"]["config"]}
    with pytest.raises(KubectlError, match=r'unknown field "spec\.conifg"'):
        server_dry_run(kubectl, to_yaml(docs))
