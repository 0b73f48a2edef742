"""macvtap (issue 27), measured: the stun time of a VM's macvtap NIC across a live migration.

Each run is a fresh lab (lab/macvtap.py): a VM with a pod-network NIC and a NIC on the macvtap
binding plugin's network (a real macvtap, mode bridge, on each node's uplink into one L2 with its
own DHCP server), a neighbour pod on the source node, one migration a -> b, and two echo streams
every 10 ms to the VM's macvtap address: from the network's gateway (the seed's ping, behind the
uplinks) and from the neighbour. The source pod lives on ``--linger`` seconds after the migration,
as KubeVirt's does (facts V8). ``release``: the node agent on the source node sets the stale
macvtap down once the domain left; ``control``: nobody does (KubeVirt issue 5912).

    python -m bench.macvtap_gap [--runs 5] [--linger 10] [--guest busybox|debian-networkd|debian-nm] [--out DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from bench.common import RESULTS, write_result
from lab.macvtap import DEFAULT_LINGER_S, MacvtapRun, run_macvtap_migration


def _summary(runs: list[MacvtapRun], field: str) -> dict[str, Any]:
    values = [getattr(r, field) for r in runs]
    back = [v for v in values if v is not None]
    return {
        "median_ms": statistics.median(back) if back else None,
        "worst_ms": max(back) if back else None,
        "not_back": len(values) - len(back),
        "values_ms": values,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="migrations per row (default 5)")
    parser.add_argument("--linger", type=float, default=DEFAULT_LINGER_S, help="source pod's life after it (s)")
    parser.add_argument("--guest", default="busybox", choices=["busybox", "debian-networkd", "debian-nm"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows: dict[str, Any] = {}
    for name, release in (("release", True), ("control", False)):
        runs = []
        for i in range(args.runs):
            run = run_macvtap_migration(release=release, linger_s=args.linger, guest=args.guest)
            print(f"{name} {i + 1}/{args.runs}: gateway {run.gateway_stun_ms} ms, neighbour {run.neighbour_stun_ms} ms")
            runs.append(run)
        rows[name] = {
            "gateway": _summary(runs, "gateway_stun_ms"),
            "neighbour": _summary(runs, "neighbour_stun_ms"),
            "neighbour_back_after_resume": _summary(runs, "neighbour_back_after_resume_ms"),
            "source_stopped_after_resume": _summary(runs, "source_stopped_after_resume_ms"),
            "mac_kept": all(r.mac_after == r.mac_before for r in runs),
            "fixup_actions": [r.fixup_actions for r in runs],
            "released": [r.released for r in runs],
        }
    out = {"runs": args.runs, "guest": args.guest, "linger_s": args.linger, "interval_ms": 10, "rows": rows}
    name = "macvtap_gap" if args.guest == "busybox" else f"macvtap_gap_{args.guest.replace('-', '_')}"
    path = write_result(name, out, args.out)
    print(f"written {path}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
