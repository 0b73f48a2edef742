"""Deterministic MACs for the ``pin`` policy.

A pinned MAC is derived from namespace, VMI name and interface name, so a VM gets the same
MAC on every start and on every node it migrates to, while two VMIs never share one by design.
"""

from __future__ import annotations

import hashlib


def pinned_mac(*, namespace: str, vmi_name: str, interface: str) -> str:
    """A locally administered, unicast MAC from a hash of the three names.

    The first octet keeps the hash's upper six bits, with the multicast bit cleared and the
    locally administered bit set: 46 bits of hash leave collisions negligible within a cluster.
    """
    digest = hashlib.sha256(f"{namespace}/{vmi_name}/{interface}".encode()).digest()
    first = (digest[0] & 0xFC) | 0x02
    octets = [first, *digest[1:6]]
    return ":".join(f"{o:02x}" for o in octets)
