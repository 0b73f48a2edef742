"""The node agent's memory: RSS idle and after a real fixup (lab: libvirt/QEMU, run under the lab lock).

``python -m sidecar node-agent`` started as the chart runs it (root, only CAP_DAC_OVERRIDE), idle
before any call, then after one migration's node hook call with its fixup (a link refresh, or a
reattach with a MAC change) and a second, idempotent call. One agent serves a whole node, so this is
a per-node figure, against the sidecar's per-VM one (docs/performance.md).

Run: ``flock /work/lab.lock python -m bench.node_agent_memory [--runs N]``.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import get_args

from bench.common import RESULTS, write_result
from lab.node_agent import NodeKind, run_node_mode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="lab migrations per kind")
    parser.add_argument("--quick", action="store_true", help="one run per kind")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    runs = 1 if args.quick else args.runs
    rows = []
    for kind in get_args(NodeKind):
        for _ in range(runs):
            result = run_node_mode(kind)
            ours = result.calls[-1]
            rows.append(
                {
                    "kind": kind,
                    "rss_idle_kib": result.rss_idle_kib,
                    "rss_after_fixup_kib": result.rss_after_kib,
                    "call_s": round(ours.seconds, 3),
                    "result": ours.result,
                    "recovered": result.reply is not None,
                }
            )
            print(rows[-1], flush=True)
    summary = {
        "rss_idle_mib_median": round(statistics.median(r["rss_idle_kib"] for r in rows) / 1024, 1),
        "rss_after_fixup_mib_median": round(statistics.median(r["rss_after_fixup_kib"] for r in rows) / 1024, 1),
        "rss_after_fixup_mib_max": round(max(r["rss_after_fixup_kib"] for r in rows) / 1024, 1),
        "call_s_median": statistics.median(r["call_s"] for r in rows),
    }
    path = write_result("node_agent_memory", {"runs": rows, "summary": summary}, args.out)
    print(summary, "->", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
