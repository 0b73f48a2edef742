"""The fixup plan: which NIC gets which action, decided from XML and annotations alone.

Pure: domain XML + VMI + expected MACs + policy + the pod-side MACs (looked up by the
caller) go in, a list of per-interface decisions comes out. The executor carries it out.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bridge_migration_contract import (
    DOMAIN_ALIAS_PREFIX,
    FixupAction,
    MacPolicy,
    managed_interfaces,
)
from sidecar.domxml import DomainInterface, parse_interfaces

MacSource = Literal["annotation", "pod", "domain"]

# Without a VMI we cannot tell bindings apart; these are the domain interface types that
# bridge and macvtap bindings produce (ethernet+tap for bridge since KubeVirt 0.59).
_FIXABLE_TYPES = frozenset({"ethernet", "bridge", "direct"})


@dataclass(frozen=True)
class Target:
    """A VMI interface we look after and the pod link it stands on."""

    name: str
    pod_link: str | None
    wanted_down: bool = False


@dataclass(frozen=True)
class InterfacePlan:
    """What to do to one domain interface, and why."""

    name: str
    alias: str
    action: FixupAction
    current_mac: str | None
    expected_mac: str | None
    mac_source: MacSource
    pod_link: str | None
    reason: str
    interface: DomainInterface


def pod_link_names(vmi_spec: Mapping[str, Any]) -> dict[str, str]:
    """Network name -> pod interface name, the way virt-launcher's pod sees them.

    The pod network is `eth0`; Multus networks are `net1`, `net2`, ... in the order of
    `spec.networks` (the naming older KubeVirt uses and the lab mimics).
    """
    out: dict[str, str] = {}
    networks = vmi_spec.get("networks")
    if not isinstance(networks, list):
        return out
    multus_index = 0
    for net in networks:
        if not isinstance(net, Mapping) or not isinstance(net.get("name"), str):
            continue
        if "pod" in net:
            out[net["name"]] = "eth0"
        elif "multus" in net:
            multus_index += 1
            out[net["name"]] = f"net{multus_index}"
    return out


def targets_from_vmi(vmi: Mapping[str, Any] | None, domain_xml: str) -> list[Target]:
    """The interfaces to look after: from the VMI when known, else every fixable `ua-` NIC."""
    spec = vmi.get("spec") if isinstance(vmi, Mapping) else None
    if isinstance(spec, Mapping):
        links = pod_link_names(spec)
        domain = spec.get("domain")
        devices = domain.get("devices") if isinstance(domain, Mapping) else None
        ifaces = devices.get("interfaces") if isinstance(devices, Mapping) else None
        out: list[Target] = []
        for managed in managed_interfaces(spec):
            raw = ifaces[managed["index"]] if isinstance(ifaces, list) else {}
            wanted_down = isinstance(raw, Mapping) and raw.get("state") == "down"
            out.append(Target(managed["name"], links.get(managed["name"]), wanted_down))
        return out
    guessed: list[Target] = []
    for iface in parse_interfaces(domain_xml):
        if iface.alias and iface.alias.startswith(DOMAIN_ALIAS_PREFIX) and iface.type in _FIXABLE_TYPES:
            # A guess in the order virt-launcher plugs them: the first on the pod network
            # (eth0), the next ones on secondary networks (net1, net2, ...).
            link = f"net{len(guessed)}" if guessed else "eth0"
            guessed.append(Target(iface.alias.removeprefix(DOMAIN_ALIAS_PREFIX), link))
    return guessed


def expected_mac(
    *,
    name: str,
    domain_mac: str | None,
    policy: MacPolicy,
    macs: Mapping[str, str],
    pod_mac: str | None,
) -> tuple[str | None, MacSource]:
    """The MAC the guest NIC must have after the fixup, and where it came from."""
    if policy == "keep":
        return domain_mac, "domain"
    if name in macs:
        return macs[name], "annotation"
    if policy == "follow-pod" and pod_mac:
        return pod_mac, "pod"
    return domain_mac, "domain"


def make_plan(
    *,
    domain_xml: str,
    vmi: Mapping[str, Any] | None,
    policy: MacPolicy,
    macs: Mapping[str, str],
    pod_macs: Mapping[str, str],
    only: Collection[str] | None = None,
) -> list[InterfacePlan]:
    """One decision per looked-after interface present in the domain.

    `pod_macs` maps pod link name (e.g. `eth0`) to its MAC; `only` restricts to these
    VMI interface names (the caller checks they exist).
    """
    by_alias = {i.alias: i for i in parse_interfaces(domain_xml) if i.alias}
    plans: list[InterfacePlan] = []
    for target in targets_from_vmi(vmi, domain_xml):
        if only is not None and target.name not in only:
            continue
        alias = DOMAIN_ALIAS_PREFIX + target.name
        iface = by_alias.get(alias)
        if iface is None:
            continue
        pod_mac = pod_macs.get(target.pod_link) if target.pod_link else None
        want, source = expected_mac(name=target.name, domain_mac=iface.mac, policy=policy, macs=macs, pod_mac=pod_mac)
        action: FixupAction
        if target.wanted_down:
            action, reason = "none", "the VMI asks for this link to be down"
        elif want is None:
            action, reason = "none", "the domain interface has no MAC"
        elif want == iface.mac:
            action, reason = "link-refresh", f"MAC unchanged ({source})"
        else:
            action, reason = "reattach", f"MAC {iface.mac} -> {want} ({source})"
        plans.append(
            InterfacePlan(
                name=target.name,
                alias=alias,
                action=action,
                current_mac=iface.mac,
                expected_mac=want,
                mac_source=source,
                pod_link=target.pod_link,
                reason=reason,
                interface=iface,
            )
        )
    return plans


def known_interface_names(vmi: Mapping[str, Any] | None, domain_xml: str) -> list[str]:
    """Names a caller may ask for in POST /v1/fixup."""
    present = {i.alias for i in parse_interfaces(domain_xml)}
    return [t.name for t in targets_from_vmi(vmi, domain_xml) if DOMAIN_ALIAS_PREFIX + t.name in present]
