"""The seed's Multus case measured: the gap over net1 (a bridge NIC on a Multus network) after a
live migration, with and without the fixer, in both IPAM modes of lab.l2 (kept: one L2 with the
network's own DHCP server; per-node: a subnet per node served by virt-launcher's stand-in).

Per run: the net1 stun time at 10 ms resolution, from the network's side (the switch namespace,
kept; the server's node, per-node): the longest silence of the one address (kept), or last old
reply to first new one (per-node); whether the client's own ping over net1 came back; and the
pod network's stun time beside it. Results: bench/results/multus_gap.json, quoted in
docs/performance.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from bench.common import RESULTS, write_result
from lab.scenario import ScenarioKind, run_scenario

KINDS: tuple[ScenarioKind, ...] = ("net1-kept", "net1-kept-control", "net1-per-node", "net1-per-node-control")


def _stats(values: list[int]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "worst": None, "best": None}
    return {"median": statistics.median(values), "worst": max(values), "best": min(values)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="migrations per scenario (default %(default)s)")
    parser.add_argument("--guest", default="busybox", choices=["busybox", "debian-networkd"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows: dict[str, Any] = {}
    for kind in KINDS:
        net1: list[int] = []
        pod: list[int] = []
        back = 0
        details = []
        for i in range(args.runs):
            scenario = run_scenario(kind, say=lambda m: print(m, file=sys.stderr), observe=20, guest=args.guest)
            run = scenario.as_dict()
            details.append(run)
            (mig,) = run["migrations"]
            if mig["net1_stun_ms"] is not None:
                net1.append(mig["net1_stun_ms"])
            if mig["stun_ms"] is not None:
                pod.append(mig["stun_ms"])
            back += bool(mig["net1_recovered"])
            print(f"{kind} run {i + 1}/{args.runs}: net1 stun {mig['net1_stun_ms']} ms", file=sys.stderr)
        rows[kind] = {
            "runs": args.runs,
            "net1_ping_back": back,
            "net1_stun_ms": _stats(net1),
            "net1_stun_recovered": len(net1),
            "pod_network_stun_ms": _stats(pod),
            "runs_detail": details,
        }
    result = {
        "benchmark": "multus_gap",
        "guest": args.guest,
        "what": "net1 stun time: ms of silence at 10 ms echoes from the network's side across the migration",
        "scenarios": rows,
    }
    write_result("multus_gap", result, args.out)
    print(f"{'scenario':<24}{'net1 ping back':>15}{'net1 stun ms (median/worst)':>30}{'pod net stun ms':>18}")
    for name, row in rows.items():
        s, p = row["net1_stun_ms"], row["pod_network_stun_ms"]
        net1_text = "never" if s["median"] is None else f"{s['median']:.0f} / {s['worst']:.0f}"
        pod_text = "never" if p["median"] is None else f"{p['median']:.0f}"
        print(f"{name:<24}{row['net1_ping_back']:>9}/{row['runs']:<5}{net1_text:>30}{pod_text:>18}")
    return result


if __name__ == "__main__":
    main()
