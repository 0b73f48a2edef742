"""In-pod sidecar: repairs guest NICs after a live migration lands on this pod."""

from typing import Any


def __getattr__(name: str) -> Any:
    # The one version, pyproject.toml's, from the installed package's metadata; read on first use
    # only: importlib.metadata costs ~0.6 MiB of RSS that `python -m sidecar serve` never needs
    # (each VM's sidecar runs in a container capped at 64M, docs/performance.md).
    if name == "__version__":
        from importlib.metadata import version

        return version("kubevirt-bridge-migration")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
