"""The pod side of each NIC, read with pyroute2 in the network namespace we run in.

In a virt-launcher pod with bridge binding the CNI's interface is renamed `eth0-nic`, the
in-pod bridge is `k6t-eth0`, the tap is `tap0`, and a dummy `eth0` keeps the CNI's MAC and
IP. The sidecar shares the pod's network namespace, so no namespace switching is needed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PodLink:
    name: str
    mac: str | None
    operstate: str
    kind: str | None


def read_links() -> dict[str, PodLink]:
    """Every link of this network namespace by name; empty when netlink fails."""
    # Imported here: pyroute2 is only needed once a fixup or status call happens.
    from pyroute2 import IPRoute

    out: dict[str, PodLink] = {}
    try:
        with IPRoute() as ipr:
            for msg in ipr.get_links():
                name = msg.get_attr("IFLA_IFNAME")
                if not isinstance(name, str):
                    continue
                mac = msg.get_attr("IFLA_ADDRESS")
                kind = None
                info = msg.get_attr("IFLA_LINKINFO")
                if info is not None:
                    kind = info.get_attr("IFLA_INFO_KIND")
                out[name] = PodLink(
                    name=name,
                    mac=mac.lower() if isinstance(mac, str) else None,
                    operstate=str(msg.get_attr("IFLA_OPERSTATE") or "UNKNOWN"),
                    kind=kind if isinstance(kind, str) else None,
                )
    except OSError as exc:
        log.warning("cannot read pod links: %s", exc)
    return out


def pod_macs(links: dict[str, PodLink]) -> dict[str, str]:
    return {name: link.mac for name, link in links.items() if link.mac}
