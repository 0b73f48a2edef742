"""Sidecar start-up to ready and idle memory, as it runs in a virt-launcher pod.

``python -m sidecar serve`` with the hook server on (a hook socket directory exists, as in a
pod) against libvirt's test driver (a domain to watch, no daemon needed). Measured: wall time
from exec to the hook socket existing and to ``/healthz`` answering 200, and VmRSS once idle.
The time from the resume event to the fixup done is measured on real guests by
``bench.migration_gap`` (it needs the lab).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import RESULTS, rss_kib, write_result
from kubelab.ports import free_port
from lab.process import stop, wait_for


def one_start(*, idle_s: float) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="bm-sidecar-bench-"))
    hooks = work / "hooks"
    hooks.mkdir()
    port = free_port()
    cmd = [
        sys.executable, "-m", "sidecar", "serve", "--libvirt-uri", "test:///default", "--domain", "test",
        "--listen", f"127.0.0.1:{port}", "--hook-socket-dir", str(hooks),
        "--pod-annotations", str(work / "annotations"), "--log-level", "warning",
    ]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    socket_at: float | None = None

    def healthy() -> bool:
        nonlocal socket_at
        if socket_at is None and any(hooks.glob("*.sock")):
            socket_at = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
            return bool(resp.status == 200)

    try:
        wait_for(healthy, timeout=60, interval=0.01, what="the sidecar's /healthz", proc=proc, ignore=(OSError,))
        healthy_at = time.perf_counter()
        time.sleep(idle_s)
        rss = rss_kib(proc.pid)
    finally:
        stop(proc, grace=10)
    return {
        "hook_socket_s": round((socket_at or healthy_at) - started, 3),
        "healthy_s": round(healthy_at - started, 3),
        "idle_rss_mib": round(rss / 1024, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one start (CI smoke)")
    parser.add_argument("--starts", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    starts = 1 if args.quick else args.starts
    runs = [one_start(idle_s=1.0 if args.quick else 5.0) for _ in range(starts)]
    summary = {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}
    result = {"benchmark": "sidecar_startup", "quick": args.quick, "starts": starts, "median": summary, "runs": runs}
    write_result("sidecar_startup", result, args.out)
    print(f"sidecar: hook socket {summary['hook_socket_s']} s, healthy {summary['healthy_s']} s, "
          f"idle RSS {summary['idle_rss_mib']} MiB (median of {starts})")  # fmt: skip
    return result


if __name__ == "__main__":
    main()
