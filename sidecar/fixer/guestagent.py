"""The guest's own view of its NICs, through the guest agent channel KubeVirt gives every domain.

KubeVirt adds the `org.qemu.guest_agent.0` channel to every domain it defines (docs/kubevirt-
facts.md R9); a guest that runs qemu-guest-agent answers on it. The fixer asks through the
libvirt connection it already holds: `virDomainInterfaceAddresses` with the agent as source
(libvirt sends `guest-network-get-interfaces`). libvirt bounds only its own `guest-sync` by default,
not the command itself, and KubeVirt sets no agent timeout (facts R23): an agent that hangs would
hold the call indefinitely. So each call runs on a thread of its own under our deadline; a call
that misses it is abandoned (no other call is made for that domain until it returns), and the NIC
is reported unverified. The fixer never changes the domain's agent timeout: that setting applies
to every client of the domain, virt-launcher's poller included.

Every failure is an answer, never an exception: no agent, an agent that hangs, one that answers
garbage (libvirt refuses to parse it) or one that lists no interfaces all come back as
`AgentView(answered=False, ...)` or as a view without the NIC, and the caller reports the NIC as
unverified with the reason.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

SRC_AGENT = 1  # VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT; spelled out: this module imports no libvirt
ADDR_TYPE_IPV4 = 0  # VIR_IP_ADDR_TYPE_IPV4


class AgentDomain(Protocol):
    def interfaceAddresses(self, source: int, flags: int = 0) -> Any: ...  # noqa: N802 - libvirt's name


@dataclass(frozen=True)
class AgentView:
    """One answer of the agent: IPv4 addresses by lower-case MAC, or why there was none."""

    answered: bool
    by_mac: Mapping[str, frozenset[str]] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0  # how long the call took


def _ipv4(addr: object) -> str | None:
    if not isinstance(addr, Mapping) or addr.get("type") != ADDR_TYPE_IPV4:
        return None
    try:
        ip = ipaddress.IPv4Address(str(addr.get("addr")))
    except ValueError:
        return None
    return None if ip.is_loopback or ip.is_link_local else str(ip)


def parse_interfaces(answer: object) -> dict[str, frozenset[str]]:
    """libvirt's answer (name -> {'hwaddr', 'addrs': [{'type', 'addr', 'prefix'}]}) as IPv4
    addresses by MAC; entries that do not have that shape are skipped, not trusted."""
    out: dict[str, set[str]] = {}
    if not isinstance(answer, Mapping):
        return {}
    for entry in answer.values():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("hwaddr"), str):
            continue
        mac = entry["hwaddr"].strip().lower()
        addrs = entry.get("addrs")
        found = {ip for a in addrs if (ip := _ipv4(a))} if isinstance(addrs, list) else set()
        out.setdefault(mac, set()).update(found)
    return {mac: frozenset(ips) for mac, ips in out.items()}


def _ask(dom: AgentDomain) -> AgentView:
    started = time.monotonic()
    try:
        answer = dom.interfaceAddresses(SRC_AGENT, 0)
    except Exception as exc:  # libvirtError for every agent failure; anything else is no answer too
        return AgentView(False, error=f"{type(exc).__name__}: {exc}".strip(), seconds=time.monotonic() - started)
    return AgentView(True, parse_interfaces(answer), seconds=time.monotonic() - started)


class AgentReader:
    """Reads the guest agent's view under a deadline; at most one call in flight per reader."""

    def __init__(self, timeout_s: float = 3.0) -> None:
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._stuck: threading.Thread | None = None

    def __call__(self, dom: AgentDomain) -> AgentView:
        with self._lock:
            if self._stuck is not None and self._stuck.is_alive():
                return AgentView(False, error="an earlier guest agent call has not returned yet")
            box: list[AgentView] = []
            worker = threading.Thread(target=lambda: box.append(_ask(dom)), name="guest-agent", daemon=True)
            worker.start()
            worker.join(self.timeout_s)
            if box:
                self._stuck = None
                return box[0]
            self._stuck = worker
            log.warning("the guest agent did not answer within %.1f s; not asking again until it does", self.timeout_s)
            return AgentView(False, error=f"the guest agent did not answer within {self.timeout_s:g} s")
