"""Admission webhook: makes bridge/macvtap VMIs live-migratable and guards migrations."""

from importlib.metadata import version

# The one version: pyproject.toml's, as the installed package's metadata carries it.
__version__ = version("kubevirt-bridge-migration")
