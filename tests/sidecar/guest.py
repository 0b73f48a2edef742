"""What the lab guest reports on its console, as test helpers."""

from __future__ import annotations

from lab.cluster import Vm
from lab.process import wait_for


def wait_guest_nic(vm: Vm, *, mac: str, since: float, timeout: float = 90) -> None:
    """Wait until the guest reports its eth0 (re)appearing with this MAC.

    The guest's poll may catch a hot-plugged NIC before sysfs shows its address and report
    it with an empty MAC first; a later line carries it, so look at every line since.
    """
    wait_for(
        lambda: any(e.fields.get("mac") == mac for e in vm.console.events("nic-up", since=since, nic="eth0")),
        timeout=timeout,
        what=f"guest eth0 with MAC {mac}",
    )
