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
    """After a migration, no link comes back up later than this long after the guest resumed, and
    (with ``adaptive_hold`` off, or when no evidence comes) not earlier either.

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
    (with 1.1 s, one of two lab runs on a busy machine still saw networkd miss the second flap).
    It counts from when the guest reports the previous link-down: a link-down less than a second
    after the one before it (a link set down again during its hold, after KubeVirt's reconcile raised
    it) is reported a second after that one, and the next NIC waits 1.5 s from then."""

    detach_timeout_s: float = 30.0
    """How long a reattach waits for the guest to release the NIC (ACPI unplug needs the guest)."""

    adaptive_hold: bool = True
    """End a link refresh's hold after a migration as soon as the guest shows it handled the link
    change, instead of always at the settle time: its vCPUs went idle after the link-down (a guest
    with work pending, the link interrupt among it, keeps its vCPU busy), or its agent shows the
    NIC lost its address. Never before ``link_pause_s``, never after ``resume_settle_s`` from the
    resume. Off: the hold always lasts until the settle time, as before (``--hold fixed``)."""

    hold_poll_s: float = 0.02
    """During a hold the fixer looks this often at the live link state (KubeVirt's own reconcile sets
    it back up, docs/kubevirt-facts.md R2) and at the guest's vCPU time."""

    idle_ratio: float = 0.3
    """A hold's evidence window counts as idle when the guest's vCPUs ran less than this share of it."""

    verify_window_s: float = 6.0
    """After a link refresh: how long the guest agent is asked for the NIC's new address."""

    stale_after_s: float = 1.5
    """After a link refresh: a NIC that still shows the same unexpected address this long after the
    link came back, having shown it at every read, is stale at once (the guest ignored the flap)."""

    reattach_verify_window_s: float = 15.0
    """After a reattach: how long the guest agent is asked for the NIC's new address (a new device
    means a new DHCP exchange, and NetworkManager first activates a profile on it)."""

    def __post_init__(self) -> None:
        if min(self.link_pause_s, self.resume_settle_s, self.link_down_spacing_s) < 0:
            raise ValueError("link pause, resume settle and link-down spacing must be >= 0")
        if self.detach_timeout_s <= 0:
            raise ValueError("the detach timeout must be > 0")
        if min(self.hold_poll_s, self.verify_window_s, self.reattach_verify_window_s, self.stale_after_s) <= 0:
            raise ValueError("the hold poll, the verify windows and the stale time must be > 0")
        if not 0 < self.idle_ratio < 1:
            raise ValueError("the idle ratio must be between 0 and 1")
