"""Real cgroup (v1) limits for a lab process: what kubelet gives a container with limits.

KubeVirt gives the hook sidecars of a Guaranteed or dedicated-CPU VMI requests = limits =
200m CPU and 64M memory (docs/kubevirt-facts.md). kubelet turns those into a memory cgroup
with `memory.limit_in_bytes` = 64000000 and a CFS quota of 20000 us per 100000 us period.
This module makes such a pair of groups under a name of our own, starts a process inside them
from its first instruction, reads what the kernel counted, and removes the groups afterwards.

This machine mounts cgroup v1 controllers (`/sys/fs/cgroup/memory`, `/sys/fs/cgroup/cpu`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PREFIX = "bml-lab"  # every group this project creates starts with this

KUBEVIRT_SIDECAR_MEMORY = 64_000_000  # "64M": decimal megabytes, as KubeVirt writes it
KUBEVIRT_SIDECAR_CPU_MILLI = 200
CFS_PERIOD_US = 100_000


@dataclass(frozen=True)
class MemoryCounters:
    limit_bytes: int
    max_usage_bytes: int
    usage_bytes: int
    failcnt: int
    oom_kills: int
    rss_bytes: int  # anonymous memory charged to the group (memory.stat total_rss)
    cache_bytes: int  # page cache charged to the group (memory.stat total_cache)


@dataclass(frozen=True)
class CpuCounters:
    quota_us: int
    period_us: int
    nr_periods: int
    nr_throttled: int
    throttled_ns: int


class LimitedGroup:
    """A memory group and a cpu group of the same name, with KubeVirt's sidecar limits."""

    def __init__(
        self,
        name: str,
        *,
        memory_bytes: int = KUBEVIRT_SIDECAR_MEMORY,
        cpu_milli: int = KUBEVIRT_SIDECAR_CPU_MILLI,
    ) -> None:
        self.name = name if name.startswith(PREFIX) else f"{PREFIX}-{name}"
        self.memory = CGROUP_ROOT / "memory" / self.name
        self.cpu = CGROUP_ROOT / "cpu" / self.name
        for controller in (self.memory.parent, self.cpu.parent):
            if not (controller / "cgroup.procs").exists():
                raise RuntimeError(f"cgroup v1 controller {controller} is not mounted")
        self.memory.mkdir()
        self.cpu.mkdir()
        # The limit first, then no swap beyond it (kubelet sets both on a v1 node without swap).
        (self.memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
        memsw = self.memory / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            memsw.write_text(str(memory_bytes))
        (self.cpu / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
        (self.cpu / "cpu.cfs_quota_us").write_text(str(cpu_milli * CFS_PERIOD_US // 1000))

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """argv that joins both groups, then execs `argv` (so it is charged from its start)."""
        script = 'echo $$ > "$1/cgroup.procs" && echo $$ > "$2/cgroup.procs" && shift 2 && exec "$@"'
        return ["sh", "-c", script, "cgroup-enter", str(self.memory), str(self.cpu), *argv]

    def pids(self) -> list[int]:
        text = (self.memory / "cgroup.procs").read_text()
        return [int(p) for p in text.split()]

    def memory_counters(self) -> MemoryCounters:
        def num(name: str) -> int:
            return int((self.memory / name).read_text().split()[0])

        stat = dict(line.split() for line in (self.memory / "memory.stat").read_text().splitlines())
        oom = dict(line.split() for line in (self.memory / "memory.oom_control").read_text().splitlines())
        return MemoryCounters(
            limit_bytes=num("memory.limit_in_bytes"),
            max_usage_bytes=num("memory.max_usage_in_bytes"),
            usage_bytes=num("memory.usage_in_bytes"),
            failcnt=num("memory.failcnt"),
            oom_kills=int(oom.get("oom_kill", "0")),
            rss_bytes=int(stat.get("total_rss", stat.get("rss", "0"))),
            cache_bytes=int(stat.get("total_cache", stat.get("cache", "0"))),
        )

    def cpu_counters(self) -> CpuCounters:
        stat = dict(line.split() for line in (self.cpu / "cpu.stat").read_text().splitlines())
        return CpuCounters(
            quota_us=int((self.cpu / "cpu.cfs_quota_us").read_text()),
            period_us=int((self.cpu / "cpu.cfs_period_us").read_text()),
            nr_periods=int(stat.get("nr_periods", "0")),
            nr_throttled=int(stat.get("nr_throttled", "0")),
            throttled_ns=int(stat.get("throttled_time", "0")),
        )

    def remove(self, timeout: float = 10.0) -> None:
        """rmdir both groups once their processes are gone (a group with members cannot go)."""
        deadline = time.monotonic() + timeout
        for group in (self.memory, self.cpu):
            while group.exists():
                try:
                    group.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)


def sweep(prefix: str = PREFIX) -> None:
    """Remove leftover empty groups of ours (after an interrupted run)."""
    for controller in ("memory", "cpu"):
        root = CGROUP_ROOT / controller
        if not root.is_dir():
            continue
        for group in root.glob(f"{prefix}-*"):
            with contextlib.suppress(OSError):
                group.rmdir()
