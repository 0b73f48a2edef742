"""MACs in the webhook: deterministic ones for the ``pin`` policy, and the check of the ones a
user gives us.

A pinned MAC is derived from namespace, VMI name and interface name, so a VM gets the same
MAC on every start and on every node it migrates to, while two VMIs never share one by design.
With a salt (``--mac-salt``, one per install) it is derived from those names and the salt, so two
clusters on one L2 with same-named VMs pin different MACs; the same salt always gives the same MAC.

A MAC a user gives us (a managed interface's ``macAddress``, our ``macs`` annotation) is pinned,
copied to the target pod and handed to the CNI: it must be one a NIC can have. virt-api only checks
that it parses (docs/kubevirt-facts.md K7, K9), so the check is ours. It is kept out of the
contract's ``normalize_mac``, which the sidecar uses to read whatever libvirt reports.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any

from bridge_migration_contract import AnnotationKeys, normalize_mac, parse_macs, vmi_managed_interfaces

UNICAST_HINT = (
    "an interface needs a unicast MAC (lowest bit of the first octet clear, not all zeros), e.g. 02:00:00:00:00:01"
)


# A salt is written in a chart value, a flag and an environment variable: printable ASCII without
# blanks, so no invisible character (a trailing newline from a file) makes it another salt.
MAC_SALT_RE = re.compile(r"[!-~]{0,256}")
MAC_SALT_RULE = "must be at most 256 printable ASCII characters without blanks (e.g. `openssl rand -hex 8`)"


def pinned_mac(*, namespace: str, vmi_name: str, interface: str, salt: str = "") -> str:
    """A locally administered, unicast MAC from a hash of the three names (and the salt).

    Without a salt the hash is SHA-256 of ``namespace/name/interface``, as in every release before
    the salt; with one, HMAC-SHA256 keyed by the salt over the same text. The first octet keeps the
    hash's upper six bits, with the multicast bit cleared and the locally administered bit set: 46
    bits of hash leave collisions negligible within a cluster.
    """
    text = f"{namespace}/{vmi_name}/{interface}".encode()
    digest = hmac.digest(salt.encode(), text, "sha256") if salt else hashlib.sha256(text).digest()
    first = (digest[0] & 0xFC) | 0x02
    octets = [first, *digest[1:6]]
    return ":".join(f"{o:02x}" for o in octets)


def unicast_mac(value: str) -> str:
    """``normalize_mac(value)`` if a NIC can carry it; ValueError saying what it is otherwise.

    Refused: the broadcast MAC, any multicast MAC (the I/G bit, the lowest bit of the first octet,
    set; libvirt refuses those at define) and the all-zero MAC (no address at all)."""
    mac = normalize_mac(value)
    octets = bytes.fromhex(mac.replace(":", ""))
    if octets == b"\xff" * 6:
        raise ValueError(f"{value!r} is the broadcast MAC; {UNICAST_HINT}")
    if octets[0] & 0x01:
        raise ValueError(f"{value!r} is a multicast MAC; {UNICAST_HINT}")
    if octets == bytes(6):
        raise ValueError(f"{value!r} is the all-zero MAC; {UNICAST_HINT}")
    return mac


def parse_unicast_macs(value: str) -> dict[str, str]:
    """The contract's ``parse_macs``, every entry also unicast; the error names the interface."""
    macs = parse_macs(value)
    for name, mac in macs.items():
        try:
            unicast_mac(mac)
        except ValueError as exc:
            raise ValueError(f"interface {name!r}: {exc}") from None
    return macs


def non_unicast_macs(vmi: Mapping[str, Any], keys: AnnotationKeys) -> list[str]:
    """What is wrong with the MACs a VMI (or a VM template, shaped as a VMI) gives us, one line each.

    Only what the webhook would act on: nothing for a VMI that opted out or has no interface of
    ours; otherwise the ``macAddress`` of each managed interface and every entry of the ``macs``
    annotation. A malformed MAC or annotation is not reported here (the mutators warn about it)."""
    metadata = vmi.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    ann: Mapping[str, Any] = annotations if isinstance(annotations, Mapping) else {}
    if str(ann.get(keys.enabled, "")).strip().lower() == "false":
        return []
    managed = vmi_managed_interfaces(vmi, keys)
    if not managed:
        return []
    problems: list[str] = []
    for iface in managed:
        if iface["mac"] is None:
            continue
        try:
            unicast_mac(iface["mac"])
        except ValueError as exc:
            problems.append(f"interface {iface['name']!r}: macAddress {exc}")
    raw = ann.get(keys.macs)
    if isinstance(raw, str):
        try:
            recorded = parse_macs(raw)
        except ValueError:
            recorded = {}
        for name, mac in recorded.items():
            try:
                unicast_mac(mac)
            except ValueError as exc:
                problems.append(f"annotation {keys.macs}: interface {name!r}: {exc}")
    return problems


def vm_template_as_vmi(vm: Mapping[str, Any] | None) -> dict[str, Any]:
    """The parts of a VM's ``spec.template`` the VMI virt-controller makes from it will have."""
    spec = vm.get("spec") if isinstance(vm, Mapping) else None
    template = spec.get("template") if isinstance(spec, Mapping) else None
    if not isinstance(template, Mapping):
        return {}
    return {"metadata": template.get("metadata"), "spec": template.get("spec")}
