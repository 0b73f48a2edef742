"""Where the lab keeps things: run directory, name prefix, cached guest artefacts.

Every namespace, interface and file the lab creates is named from ``PREFIX`` or lives under
``RUN_ROOT``, so ``python -m lab cleanup`` can find leftovers without touching anything else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

PREFIX: Final = "bml"  # bridge-migration lab
RUN_ROOT: Final = Path("/run/bml-lab")
GUEST_CACHE: Final = Path("/var/cache/bridge-migration/guest")
GUEST_KERNEL: Final = GUEST_CACHE / "vmlinuz"
GUEST_INITRD: Final = GUEST_CACHE / "initramfs.cpio.gz"
# The Debian 12 guests (scripts/build-guest-debian.sh networkd|nm): root.img, initrd.cpio.gz.
DEBIAN_GUEST: Final = GUEST_CACHE / "debian-networkd"  # systemd-networkd
DEBIAN_NM_GUEST: Final = GUEST_CACHE / "debian-nm"  # NetworkManager
# Shared by every daemon so only the first one pays for the QEMU capability probe.
LIBVIRT_CACHE: Final = Path("/var/cache/libvirt")
REPO_ROOT: Final = Path(__file__).resolve().parent.parent
VENV_PYTHON: Final = REPO_ROOT / ".venv" / "bin" / "python"
