"""Where the Kubernetes binaries and KubeVirt's CRD schemas are: the cache that ``scripts/build-k8s.sh``
and ``scripts/build-crds.sh`` fill."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

K8S_VERSION: Final = "v1.37.2"
REPO_ROOT: Final = Path(__file__).resolve().parent.parent
BUILD_SCRIPT: Final = REPO_ROOT / "scripts" / "build-k8s.sh"
DEFAULT_BIN: Final = Path(f"/var/cache/bridge-migration/k8s-{K8S_VERSION}/bin")
NAMES: Final = ("etcd", "kube-apiserver", "kubectl", "helm")

# The same pins and default packages as scripts/build-crds.sh (tests/kube/test_crd_sources.py checks
# that they agree). The packages of kubevirt.io/api kubelab installs CRDs from, sorted: the VMI, VM,
# VMIM and KubeVirt kinds (core/v1) and node mode's Plugin (plugin/v1alpha1), generated in one
# controller-gen run into one directory.
KUBEVIRT_API_VERSION: Final = "v1.9.0"
CONTROLLER_TOOLS_VERSION: Final = "v0.20.1"
API_PACKAGES: Final = ("core/v1", "plugin/v1alpha1")
CRDS_SCRIPT: Final = REPO_ROOT / "scripts" / "build-crds.sh"
DEFAULT_CRD_DIR: Final = Path(
    "/var/cache/bridge-migration/kubevirt-crds/"
    f"api-{KUBEVIRT_API_VERSION}_controller-gen-{CONTROLLER_TOOLS_VERSION}_"
    + "+".join(p.replace("/", "-") for p in API_PACKAGES)
)


class ToolsMissingError(RuntimeError):
    """The binaries are not built; the message says how to build them."""


@dataclass(frozen=True)
class Tools:
    etcd: Path
    kube_apiserver: Path
    kubectl: Path
    helm: Path


def find_tools(*, build: bool = False, need: tuple[str, ...] = NAMES) -> Tools:
    """The binaries in ``$BM_K8S_BIN`` or the default cache; ``build`` runs the build script first.

    Only the binaries in ``need`` must exist. The build script re-uses what it already built, so
    ``build=True`` is cheap once the cache is warm.
    """
    bin_dir = Path(os.environ.get("BM_K8S_BIN", str(DEFAULT_BIN)))
    missing = [name for name in need if not (bin_dir / name).is_file()]
    if missing and build:
        # Progress goes to stderr, where a person running the demo sees it.
        subprocess.run([str(BUILD_SCRIPT), *missing], check=True, stdout=subprocess.DEVNULL)
        missing = [name for name in need if not (bin_dir / name).is_file()]
    if missing:
        raise ToolsMissingError(f"missing {', '.join(missing)} in {bin_dir}: run {BUILD_SCRIPT} (or set BM_K8S_BIN)")
    return Tools(
        etcd=bin_dir / "etcd",
        kube_apiserver=bin_dir / "kube-apiserver",
        kubectl=bin_dir / "kubectl",
        helm=bin_dir / "helm",
    )


class CrdSchemasMissingError(RuntimeError):
    """KubeVirt's generated CRDs are not in the cache; the message says how to make them."""


def find_crd_dir(*, build: bool = False) -> Path:
    """The directory of controller-gen's KubeVirt CRDs: ``$BM_KUBEVIRT_CRDS`` or the default cache.

    ``build`` runs ``scripts/build-crds.sh`` over ``API_PACKAGES`` first (a no-op once the cache
    holds them). The directory counts only once the script has finished it (its ``.complete`` stamp).
    """
    crd_dir = Path(os.environ.get("BM_KUBEVIRT_CRDS", str(DEFAULT_CRD_DIR)))
    if build and not (crd_dir / ".complete").is_file():
        subprocess.run([str(CRDS_SCRIPT), *API_PACKAGES], check=True, stdout=subprocess.DEVNULL)
    if not (crd_dir / ".complete").is_file():
        raise CrdSchemasMissingError(
            f"no generated KubeVirt CRDs in {crd_dir}: run {CRDS_SCRIPT} (or set BM_KUBEVIRT_CRDS)"
        )
    return crd_dir
