"""Where kubelab's CRD schemas come from, without a control plane: the pins and default packages of
scripts/build-crds.sh and kubelab agree, and missing generated schemas are an error (a failed test),
never open CRDs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kubelab import tools
from kubelab.crds import kubevirt_crds, plugin_crd
from kubelab.tools import CrdSchemasMissingError, find_crd_dir


def _script_default(name: str) -> str:
    text = tools.CRDS_SCRIPT.read_text()
    match = re.search(rf"^{name}=\$\{{{name}:-([^}}]+)\}}$", text, re.M)
    assert match, f"{name} default not found in {tools.CRDS_SCRIPT}"
    return match.group(1)


def test_the_build_script_and_kubelab_pin_the_same_versions() -> None:
    assert _script_default("KUBEVIRT_API_VERSION") == tools.KUBEVIRT_API_VERSION
    assert _script_default("CONTROLLER_TOOLS_VERSION") == tools.CONTROLLER_TOOLS_VERSION
    versions = f"api-{tools.KUBEVIRT_API_VERSION}_controller-gen-{tools.CONTROLLER_TOOLS_VERSION}"
    assert tools.DEFAULT_CRD_DIR.name == f"{versions}_core-v1+plugin-v1alpha1"


def test_the_build_script_and_kubelab_default_to_the_same_api_packages() -> None:
    match = re.search(r"^DEFAULT_PACKAGES=\(([^)]*)\)$", tools.CRDS_SCRIPT.read_text(), re.M)
    assert match, f"DEFAULT_PACKAGES not found in {tools.CRDS_SCRIPT}"
    assert tuple(match.group(1).split()) == tools.API_PACKAGES == tuple(sorted(tools.API_PACKAGES))


def test_without_generated_schemas_kubelab_refuses_to_install_crds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BM_KUBEVIRT_CRDS", str(tmp_path))
    with pytest.raises(CrdSchemasMissingError, match=r"build-crds\.sh"):
        find_crd_dir()
    with pytest.raises(CrdSchemasMissingError, match=r"kubevirt\.io_virtualmachineinstances\.yaml is missing"):
        kubevirt_crds(tmp_path)
    with pytest.raises(CrdSchemasMissingError, match=r"plugin\.kubevirt\.io_plugins\.yaml is missing.*build-crds\.sh"):
        plugin_crd(build=False, crd_dir=tmp_path)
