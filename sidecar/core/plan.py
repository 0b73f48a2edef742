"""The fixup plan: which NIC gets which action, decided from XML and annotations alone.

Pure: domain XML + VMI + expected MACs + policy + the pod-side MACs (looked up by the
caller) go in, a list of per-interface decisions comes out. The executor carries it out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from bridge_migration_contract import (
    DOMAIN_ALIAS_PREFIX,
    Binding,
    FixupAction,
    KubevirtFamily,
    MacPolicy,
    NicRefresh,
    SkipMultusBridges,
    managed_interfaces,
    normalize_mac,
)
from sidecar.core.domxml import DomainInterface, parse_interfaces
from sidecar.core.models import InterfaceFixup, InterfaceResult, MacSource

# Without a VMI we cannot tell bindings apart; these are the domain interface types that
# bridge and macvtap bindings produce (ethernet+tap for bridge since KubeVirt 0.59).
_FIXABLE_TYPES = frozenset({"ethernet", "bridge", "direct"})


@dataclass(frozen=True)
class Target:
    """A VMI interface we look after and the pod link it stands on."""

    name: str
    pod_link: str | None
    wanted_down: bool = False
    # None when there is no VMI to tell (a guess from the domain XML).
    binding: Binding | None = None
    network: Literal["pod", "multus"] | None = None


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

    def record(self, *, result: InterfaceResult, new_mac: str | None, error: str | None = None) -> InterfaceFixup:
        """What the fixup record says of this interface once ``result`` is known."""
        return InterfaceFixup(
            name=self.name,
            alias=self.alias,
            action=self.action,
            reason=self.reason,
            old_mac=self.current_mac,
            new_mac=new_mac,
            mac_source=self.mac_source,
            result=result,
            error=error,
        )


def multus_pod_links(names: Iterable[str]) -> list[str]:
    """The pod links that can stand for a Multus network: KubeVirt's hashed ``pod<hex>`` names and
    the legacy ``net<ordinal>`` ones (the pod network's ``eth0`` is neither)."""
    return [n for n in names if n.startswith(("pod", "net"))]


def hashed_pod_interface_name(network_name: str) -> str:
    """KubeVirt's name for a Multus network's pod interface: ``pod`` + 11 hex digits of the
    SHA-256 of the VMI network's name (11 so that ``<name>-nic`` fits the kernel's 15 characters;
    docs/kubevirt-facts.md D5)."""
    return "pod" + hashlib.sha256(network_name.encode()).hexdigest()[:11]


def _multus_link(network_name: str, ordinal: int, present: Collection[str] | None) -> str:
    """The hashed name; the legacy ``net<ordinal>`` only when the pod has it and not the hashed one."""
    hashed, legacy = hashed_pod_interface_name(network_name), f"net{ordinal}"
    return legacy if present is not None and hashed not in present and legacy in present else hashed


def _status_pod_interface_names(vmi: Mapping[str, Any] | None) -> dict[str, str]:
    status = vmi.get("status") if isinstance(vmi, Mapping) else None
    return _field_by_name(status.get("interfaces") if isinstance(status, Mapping) else None, "podInterfaceName")


def pod_link_names(vmi: Mapping[str, Any], present: Collection[str] | None = None) -> dict[str, str]:
    """Network name -> pod interface name, the way virt-launcher's pod has them.

    The VMI's ``status.interfaces[].podInterfaceName`` wins when virt-handler reported it. Else
    KubeVirt's naming scheme: ``eth0`` for the pod network, the hashed name for a Multus network.
    KubeVirt keeps the ordinal ``net1``, ``net2``... (``spec.networks`` order) only for pods that
    already have them (made by an older KubeVirt), so with ``present`` (the pod's links) an
    ordinal name is taken when the hashed one is absent and the ordinal one is there.
    """
    spec = vmi.get("spec")
    networks = spec.get("networks") if isinstance(spec, Mapping) else None
    if not isinstance(networks, list):
        return {}
    reported = _status_pod_interface_names(vmi)
    out: dict[str, str] = {}
    multus_index = 0
    for net in networks:
        if not isinstance(net, Mapping) or not isinstance(net.get("name"), str):
            continue
        name = net["name"]
        if "pod" in net:
            out[name] = "eth0"
        elif "multus" in net:
            multus_index += 1
            out[name] = _multus_link(name, multus_index, present)
        else:
            continue
        if name in reported:
            out[name] = reported[name]
    return out


def targets_from_vmi(
    vmi: Mapping[str, Any] | None,
    domain_xml: str,
    present: Collection[str] | None = None,
    skip: SkipMultusBridges = frozenset(),
    recorded: Collection[str] | None = None,
) -> list[Target]:
    """The interfaces to look after: from the VMI when known, else every fixable `ua-` NIC.

    ``present`` names the pod's links, for telling KubeVirt's legacy ordinal names apart;
    ``skip`` is the opt-out of bridge interfaces on Multus networks (the skip-multus-bridges
    annotation). Without a VMI bindings cannot be told apart, so a named interface is skipped
    whatever it is, and ``*`` keeps only the first guessed NIC (the pod network's); and where the
    webhook ``recorded`` the interfaces it manages (the interfaces annotation), only those are
    kept (a masquerade NIC is a tap like a bridge NIC's, and must not be touched)."""
    spec = vmi.get("spec") if isinstance(vmi, Mapping) and isinstance(vmi.get("spec"), Mapping) else None
    if isinstance(vmi, Mapping) and isinstance(spec, Mapping):
        links = pod_link_names(vmi, present)
        domain = spec.get("domain")
        devices = domain.get("devices") if isinstance(domain, Mapping) else None
        ifaces = devices.get("interfaces") if isinstance(devices, Mapping) else None
        out: list[Target] = []
        for managed in managed_interfaces(spec, skip):
            raw = ifaces[managed["index"]] if isinstance(ifaces, list) else {}
            wanted_down = isinstance(raw, Mapping) and raw.get("state") == "down"
            out.append(
                Target(
                    managed["name"],
                    links.get(managed["name"]),
                    wanted_down,
                    binding=managed["binding"],
                    network=managed["network"],
                )
            )
        return out
    guessed: list[Target] = []
    for iface in parse_interfaces(domain_xml):
        if iface.alias and iface.alias.startswith(DOMAIN_ALIAS_PREFIX) and iface.type in _FIXABLE_TYPES:
            # A guess in the order virt-launcher plugs them: the first on the pod network
            # (eth0), the next ones on Multus networks. A bridge interface is named after its
            # network, so the hashed name can be computed; the ordinal one is the legacy fallback.
            name = iface.alias.removeprefix(DOMAIN_ALIAS_PREFIX)
            if _on_a_multus_link(iface, present):
                guessed.append(Target(name, iface.target_dev, binding="macvtap", network="multus"))
                continue
            link = "eth0"
            if guessed:
                link = _multus_link(name, len(guessed), present)
            guessed.append(Target(name, link))
    # Filtered after the guess: a NIC's position among the taps still names its pod link.
    if recorded is not None:
        guessed = [t for t in guessed if t.name in recorded]
    # The opt-out is for bridges on Multus networks: a macvtap NIC is never skipped by it.
    if skip == "*":
        return [t for index, t in enumerate(guessed) if index == 0 or t.binding == "macvtap"]
    return [t for t in guessed if t.name not in skip or t.binding == "macvtap"]


def _on_a_multus_link(iface: DomainInterface, present: Collection[str] | None) -> bool:
    """Whether libvirt writes into one of the pod's Multus links itself: only the macvtap binding
    plugin does, whose domain target is the macvtap device in the pod (facts V2); a bridge NIC's
    target is a tap (``tap0``, ``tap<hash>``) beside the pod link."""
    return present is not None and iface.target_dev is not None and iface.target_dev in multus_pod_links(present)


def _field_by_name(ifaces: object, field: str) -> dict[str, str]:
    """Interface name -> the string in ``field``, from a list of interface objects."""
    out: dict[str, str] = {}
    for iface in ifaces if isinstance(ifaces, list) else []:
        if isinstance(iface, Mapping):
            name, value = iface.get("name"), iface.get(field)
            if isinstance(name, str) and isinstance(value, str) and value:
                out[name] = value
    return out


def _macs_by_name(ifaces: object, field: str) -> dict[str, str]:
    """Normalized MACs (a spec may spell one ``0200.5e10.0001``); one that does not parse is left out."""
    out: dict[str, str] = {}
    for name, raw in _field_by_name(ifaces, field).items():
        try:
            out[name] = normalize_mac(raw)
        except ValueError:
            continue
    return out


def _spec_macs(vmi: Mapping[str, Any] | None) -> dict[str, str]:
    spec = vmi.get("spec") if isinstance(vmi, Mapping) else None
    domain = spec.get("domain") if isinstance(spec, Mapping) else None
    devices = domain.get("devices") if isinstance(domain, Mapping) else None
    return _macs_by_name(devices.get("interfaces") if isinstance(devices, Mapping) else None, "macAddress")


def _status_macs(vmi: Mapping[str, Any] | None) -> dict[str, str]:
    status = vmi.get("status") if isinstance(vmi, Mapping) else None
    return _macs_by_name(status.get("interfaces") if isinstance(status, Mapping) else None, "mac")


def expected_mac(
    *,
    name: str,
    domain_mac: str | None,
    family: KubevirtFamily,
    macs: Mapping[str, str],
    spec_mac: str | None,
    status_mac: str | None,
    pod_mac: str | None,
) -> tuple[str | None, MacSource]:
    """The MAC the target's DHCP server answers, so the one the guest NIC must have.

    virt-launcher's server answers a single MAC and ignores every other (docs/kubevirt-facts.md
    D1, D2): the spec's macAddress; from v1.9 on, else the MAC in the VMI's status; else the pod
    interface's own MAC. Our `macs` annotation stands for the spec (the webhook writes there what
    it pinned or found in the spec). Without the VMI's status, the domain's MAC stands for it:
    virt-handler reports a bridge NIC's status MAC from the domain, and the domain arrived
    unchanged from the source.
    """
    if name in macs:
        return macs[name], "annotation"
    if spec_mac:
        return spec_mac, "spec"
    if family == "v1.9+":
        if status_mac:
            return status_mac, "status"
        if domain_mac:
            return domain_mac, "domain"
    if pod_mac:
        return pod_mac, "pod"
    return domain_mac, "domain"


def _policy_note(policy: MacPolicy, family: KubevirtFamily, source: MacSource, changes: bool) -> str:
    """Why a policy could not be followed, when KubeVirt's DHCP server leaves no choice."""
    if policy == "keep" and changes and source == "pod":
        return "; keep is not possible: KubeVirt v1.5-v1.8 serves DHCP to the pod's MAC only"
    if policy == "follow-pod" and source in ("status", "domain") and family == "v1.9+":
        return "; follow-pod is not possible: KubeVirt v1.9+ serves DHCP to the VMI status MAC"
    return ""


def _expected(
    target: Target,
    iface: DomainInterface,
    *,
    policy: MacPolicy,
    family: KubevirtFamily,
    macs: Mapping[str, str],
    spec_mac: str | None,
    status_mac: str | None,
    pod_macs: Mapping[str, str],
    ipv4_less: Collection[str],
) -> tuple[str | None, MacSource, str]:
    """The MAC the guest must end with, where it comes from, and a note on the policy."""
    if target.pod_link in ipv4_less and target.network != "pod":
        return iface.mac, "domain", "; the network's own DHCP server (no pod IPv4)"
    want, source = expected_mac(
        name=target.name,
        domain_mac=iface.mac,
        family=family,
        macs=macs,
        spec_mac=spec_mac,
        status_mac=status_mac,
        pod_mac=pod_macs.get(target.pod_link) if target.pod_link else None,
    )
    return want, source, _policy_note(policy, family, source, want != iface.mac)


def _action(
    target: Target, *, current: str | None, want: str | None, refresh: NicRefresh, source: MacSource, note: str
) -> tuple[FixupAction, str]:
    """What to do to the NIC, and the reason the record gives."""
    if target.wanted_down:
        return "none", "the VMI asks for this link to be down"
    if want is None:
        return "none", "the domain interface has no MAC"
    if want == current and refresh == "reattach":
        # The guest's network stack ignores a short carrier loss (NetworkManager waits 6 s
        # before it acts); a NIC that goes away and comes back makes it start DHCP anew.
        return "reattach", f"MAC unchanged ({source}); reattach requested (nic-refresh){note}"
    if want == current:
        # auto starts here too; the closed loop escalates to a reattach when the guest did not renew.
        return "link-refresh", f"MAC unchanged ({source}){note}"
    return "reattach", f"MAC {current} -> {want} ({source}){note}"


MACVTAP_UNCHANGED = (
    "macvtap: the target's device carries the guest's MAC; the pinned MAC and the address stay valid on the target "
    "(facts V6)"
)


def _macvtap_device_mac(
    target: Target, iface: DomainInterface, *, pinned: tuple[str | None, MacSource], pod_macs: Mapping[str, str]
) -> tuple[str | None, MacSource]:
    """The MAC the target's macvtap device carries: read from the pod, under the domain's target
    device (libvirt writes into the macvtap itself, facts V2), else under the pod link the VMI
    names; where the pod's links cannot be read (the node agent), the pinned MAC, which macvtap-cni
    sets on the device (V6). None when neither is known."""
    for link in (iface.target_dev, target.pod_link):
        if link is not None and link in pod_macs:
            return pod_macs[link], "pod"
    return pinned


def _macvtap_decision(
    target: Target, iface: DomainInterface, device: tuple[str | None, MacSource], refresh: NicRefresh
) -> tuple[str | None, MacSource, FixupAction, str]:
    """Expected MAC, its source, action and reason for a macvtap NIC. virt-launcher serves it no
    DHCP (facts V4): the network behind the macvtap's lower device does, the same L2 on every node,
    so the guest's address stays valid and only the MAC matters: the device delivers frames for its
    own MAC alone (V6). No link refresh by default: there is no lease to renew. Only an explicit
    ``nic-refresh: link`` asks for one, for a network whose server gives another address on the
    target node (what KubeVirt's own ``link-refresh`` migration method is for, V5)."""
    current, (mac, source) = iface.mac, device
    if target.wanted_down:
        return current, "domain", "none", "the VMI asks for this link to be down"
    if current is None:
        return None, "domain", "none", "the domain interface has no MAC"
    if mac is None:
        why = "macvtap: the target's macvtap device cannot be read here and the VMI pins no MAC; nothing to change"
        return current, "domain", "none", why
    if mac == current:
        if refresh == "link":
            return current, source, "link-refresh", "macvtap: MAC unchanged; nic-refresh: link asks for a lease renewal"
        return current, source, "none", MACVTAP_UNCHANGED
    why = "macvtap: the target's device delivers frames for its own MAC only (facts V6)"
    return mac, source, "reattach", f"MAC {current} -> {mac} ({source}); {why}"


def _pinned(name: str, spec_macs: Mapping[str, str], macs: Mapping[str, str]) -> tuple[str | None, MacSource]:
    """The MAC the VMI pins for ``name``: the spec's (what virt-controller hands the CNI, facts
    V6), else our ``macs`` record of it (a fixer that sees no VMI)."""
    if name in spec_macs:
        return spec_macs[name], "spec"
    if name in macs:
        return macs[name], "annotation"
    return None, "domain"


def make_plan(
    *,
    domain_xml: str,
    vmi: Mapping[str, Any] | None,
    policy: MacPolicy,
    macs: Mapping[str, str],
    pod_macs: Mapping[str, str],
    family: KubevirtFamily = "v1.9+",
    only: Collection[str] | None = None,
    refresh: NicRefresh = "auto",
    skip: SkipMultusBridges = frozenset(),
    ipv4_less: Collection[str] = frozenset(),
    recorded: Collection[str] | None = None,
) -> list[InterfacePlan]:
    """One decision per looked-after interface present in the domain.

    ``ipv4_less`` names the pod links that hold no IPv4 address: a bridge NIC on a Multus
    network whose CNI gave the pod no address gets no DHCP server from virt-launcher (facts M2),
    its guest asks the network's own server, which answers any MAC, so the MAC the guest has is
    the one it keeps (its lease and its place in the network's forwarding tables go with it).

    `pod_macs` maps pod link name (e.g. `eth0`) to its MAC; `family` is the KubeVirt version
    family whose DHCP rule applies; `only` restricts to these VMI interface names (the caller
    checks they exist). The policy does not change the expected MAC (KubeVirt's server decides
    it); the reason says when the policy could not be followed. A macvtap NIC gets no DHCP from
    KubeVirt: it is left alone (action ``none``, the reason says why) when the target's macvtap
    device carries its MAC, and re-attached with the device's MAC when it does not.
    """
    by_alias = {i.alias: i for i in parse_interfaces(domain_xml) if i.alias}
    spec_macs, status_macs = _spec_macs(vmi), _status_macs(vmi)
    expected = partial(_expected, policy=policy, family=family, macs=macs, pod_macs=pod_macs, ipv4_less=ipv4_less)
    plans: list[InterfacePlan] = []
    for target in targets_from_vmi(vmi, domain_xml, pod_macs, skip, recorded):
        iface = by_alias.get(DOMAIN_ALIAS_PREFIX + target.name)
        if iface is None or (only is not None and target.name not in only):
            continue
        if target.binding == "macvtap":
            pinned = _pinned(target.name, spec_macs, macs)
            device = _macvtap_device_mac(target, iface, pinned=pinned, pod_macs=pod_macs)
            want, source, action, reason = _macvtap_decision(target, iface, device, refresh)
        else:
            want, source, note = expected(
                target, iface, spec_mac=spec_macs.get(target.name), status_mac=status_macs.get(target.name)
            )
            action, reason = _action(target, current=iface.mac, want=want, refresh=refresh, source=source, note=note)
        plans.append(
            InterfacePlan(
                name=target.name,
                alias=DOMAIN_ALIAS_PREFIX + target.name,
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


def known_interface_names(
    vmi: Mapping[str, Any] | None,
    domain_xml: str,
    skip: SkipMultusBridges = frozenset(),
    recorded: Collection[str] | None = None,
) -> list[str]:
    """Names a caller may ask for in POST /v1/fixup."""
    present = {i.alias for i in parse_interfaces(domain_xml)}
    targets = targets_from_vmi(vmi, domain_xml, skip=skip, recorded=recorded)
    return [t.name for t in targets if DOMAIN_ALIAS_PREFIX + t.name in present]
