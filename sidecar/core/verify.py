"""Whether the guest is back, from what its agent shows, and which step comes next when it is not.

Pure: the closed loop (sidecar/fixer/closedloop.py) reads the guest agent and the pod link, and
asks here what that means. A NIC is found by the MAC it has after the step; what it must hold
depends on the network behind it:

- the pod link holds an IPv4 address (the pod network; a Multus network with IPAM): KubeVirt's
  DHCP server hands the guest exactly that address (docs/kubevirt-facts.md D1, M2), so the NIC
  must hold it;
- the pod link holds none (a Multus network whose own DHCP server answers the guest, M2): the
  address the guest had stays valid on the target, so the NIC must hold an IPv4 address;
- the pod network seen from outside the pod (the node agent cannot read the pod's links): the
  target pod's address is new, so the NIC must hold an IPv4 address it did not hold before the
  fixup (``CHANGED``);
- otherwise (a Multus network seen from outside the pod): nothing to expect, the NIC is unverified.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Final, Literal

from bridge_migration_contract import FixupAction, NicRefresh

# The pod link's address could not be read: there is no address to expect.
UNKNOWN: Final = "unknown"
# The NIC must hold an address it did not hold before the fixup (the pod network, from outside).
CHANGED: Final = "changed"
Expected = str | None | Literal["unknown", "changed"]
Judgement = Literal["verified", "pending", "stale", "unverifiable"]


@dataclass(frozen=True)
class Verdict:
    judgement: Judgement
    reason: str
    address: str | None = None  # the address the decision rests on, when there is one


def judge(
    *,
    expected: Expected,
    seen: Collection[str] | None,
    kept_old: bool = False,
    before: Collection[str] | None = None,
) -> Verdict:
    """What ``seen`` (the NIC's IPv4 addresses as the agent shows them, None: the agent lists no
    NIC with that MAC) means for a NIC expected to hold ``expected``.

    ``kept_old``: the NIC has shown the same, unexpected addresses at every read since the step
    ended, for as long as the loop waits before it calls that stale (the guest ignored the flap).
    ``before``: what the NIC held before the fixup (only needed for ``CHANGED``)."""
    if expected == UNKNOWN or (expected == CHANGED and before is None):
        return Verdict("unverifiable", "the address the target gives this NIC cannot be read here")
    if seen is None:
        return Verdict("pending", "the guest agent lists no NIC with this MAC")
    addresses = sorted(seen)
    if expected == CHANGED:
        assert before is not None
        new = sorted(set(seen) - set(before))
        if new:
            return Verdict("verified", f"holds {new[0]}, new since the migration", new[0])
        shown = ", ".join(addresses) or "no IPv4 address"
        if kept_old and addresses:
            return Verdict("stale", f"kept {shown} through the step (expected a new address)", addresses[0])
        return Verdict("pending", f"holds {shown}, expected a new address", addresses[0] if addresses else None)
    if expected is None:
        if addresses:
            return Verdict("verified", f"holds {addresses[0]} (the network's own DHCP keeps it)", addresses[0])
        return Verdict("pending", "no IPv4 address on the NIC yet")
    if expected in seen:
        return Verdict("verified", f"holds {expected}", expected)
    if not addresses:
        return Verdict("pending", f"no IPv4 address on the NIC yet (expected {expected})")
    shown = ", ".join(addresses)
    if kept_old:
        return Verdict("stale", f"kept {shown} through the step (expected {expected})", addresses[0])
    return Verdict("pending", f"holds {shown}, expected {expected}", addresses[0])


def at_window_end(verdict: Verdict, expected: Expected) -> Verdict:
    """The verdict once the window is over: what is still pending is stale."""
    if verdict.judgement != "pending":
        return verdict
    return Verdict("stale", f"{verdict.reason} when the window ended", verdict.address)


def ladder(action: FixupAction, refresh: NicRefresh, remembered: FixupAction | None = None) -> tuple[FixupAction, ...]:
    """The steps a NIC may go through, in order, each checked before the next is tried.

    A NIC whose MAC changes is reattached (a second reattach when the first left the guest
    stale). A NIC whose MAC stays: ``auto`` starts with a link refresh and escalates to a reattach
    with the same MAC, which every DHCP client notices, NetworkManager included (a longer hold is
    not a step: NetworkManager ignores a carrier loss shorter than about six seconds, facts R11, so
    a hold it would notice costs more than a reattach); ``remembered`` (what worked for this VM
    last time, carried in the domain's metadata) lets ``auto`` start at the step that worked.
    ``link`` never escalates; ``reattach`` starts there."""
    if action == "none":
        return ()
    if action == "reattach" or refresh == "reattach":
        return ("reattach", "reattach")
    if refresh == "link":
        return ("link-refresh",)
    if remembered == "reattach":
        return ("reattach", "reattach")
    return ("link-refresh", "reattach")
