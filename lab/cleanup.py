"""Remove what a lab left behind: processes in our namespaces, the namespaces, run dirs.

Everything the lab creates is named ``bml-<lab id>-...`` (namespaces) or lives under
``/run/bml-lab/<lab id>`` (files), so this needs no record of what was started: it kills the
processes ``ip netns pids`` reports inside each of our namespaces (libvirtd, QEMU, the DHCP stand-in,
sidecar), then deletes the namespaces and the run directories.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time

from lab.cgroups import PREFIX as CGROUP_PREFIX
from lab.cgroups import sweep
from lab.paths import PREFIX, RUN_ROOT
from lab.shell import run


def lab_namespaces(lab_id: str | None = None) -> list[str]:
    prefix = f"{PREFIX}-{lab_id}-" if lab_id else f"{PREFIX}-"
    names = [line.split()[0] for line in run(["ip", "netns", "list"]).splitlines() if line.strip()]
    return [n for n in names if n.startswith(prefix)]


def _pids_in(netns: str) -> list[int]:
    out = run(["ip", "netns", "pids", netns], check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def kill_namespace_processes(namespaces: list[str], *, grace: float = 5.0) -> int:
    pids = {pid for ns in namespaces for pid in _pids_in(ns)}
    pids.discard(os.getpid())
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def cleanup(lab_id: str | None = None, *, keep_files: bool = False) -> list[str]:
    """Tear down one lab (``lab_id``) or every lab; returns what was removed, for the log."""
    removed: list[str] = []
    namespaces = lab_namespaces(lab_id)
    killed = kill_namespace_processes(namespaces)
    if killed:
        removed.append(f"{killed} processes")
    for ns in namespaces:
        run(["ip", "netns", "delete", ns], check=False)
        removed.append(f"netns {ns}")
    # Sidecar cgroups (lab.cgroups) are named bml-lab-<lab id>-<pod>; empty once the sidecars died.
    sweep(f"{CGROUP_PREFIX}-{lab_id}" if lab_id else CGROUP_PREFIX)
    if not keep_files:
        dirs = [RUN_ROOT / lab_id] if lab_id else (list(RUN_ROOT.iterdir()) if RUN_ROOT.exists() else [])
        for d in dirs:
            if d.exists():
                shutil.rmtree(d, ignore_errors=True)
                removed.append(f"dir {d}")
    return removed
