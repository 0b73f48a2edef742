"""Where the Kubernetes binaries are: the cache that ``scripts/build-k8s.sh`` fills."""

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
