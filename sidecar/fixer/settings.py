"""How the fixer times its libvirt calls: one group of settings, its defaults declared once.

Both programs (the per-VM `serve` and the per-node `node-agent`) embed a `FixerSettings`; their
flags, help texts and defaults are derived from it (sidecar/options.py), and the lab and the
benchmarks take these defaults instead of restating them. All values are seconds.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FixerSettings:
    link_pause_s: float = 0.1
    """How long a link refresh holds the NIC down when nothing else asks for longer."""

    resume_settle_s: float = 1.0
    """After a migration, no link comes back up before this long after the guest resumed.

    A guest that has just resumed in the target pod handles virtio-net's link interrupt late:
    when it reads the link status only after the link is up again, it sees no flap at all and
    keeps its stale lease. In the lab a TCG guest with two NICs missed a 100 ms and a 500 ms flap
    of the first NIC, started at the resume event; flaps a second or more after the resume were
    always seen (docs/lab.md, "The link pause"). It costs the first NIC up to this much longer
    down, where a missed flap strands the guest until its lease ends."""

    link_down_spacing_s: float = 1.5
    """Each link-down waits until this long after the previous one.

    A Linux guest reports carrier-down events at most once a second (the kernel's linkwatch rate
    limit; carrier-up is exempt). A second NIC's 100 ms flap inside that second reaches the
    guest's network stack as no change at all: systemd-networkd on a Multus NIC was seen to miss
    it in the lab. 1.5 s is the 1 s limit plus room for a guest that handles the first event late
    (with 1.1 s, one of two lab runs on a busy machine still saw networkd miss the second flap)."""

    detach_timeout_s: float = 30.0
    """How long a reattach waits for the guest to release the NIC (ACPI unplug needs the guest)."""

    def __post_init__(self) -> None:
        if min(self.link_pause_s, self.resume_settle_s, self.link_down_spacing_s) < 0:
            raise ValueError("link pause, resume settle and link-down spacing must be >= 0")
        if self.detach_timeout_s <= 0:
            raise ValueError("the detach timeout must be > 0")
