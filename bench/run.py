"""``python -m bench.run``: every benchmark, then the plots and the tables in docs/performance.md.

``--quick`` runs each with tiny counts into a scratch directory (the CI smoke: it proves the
benchmarks still run, and asserts nothing about speed). Without it, results go to
bench/results/*.json, plots to bench/plots/*.png and the tables into docs/performance.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench import (
    migration_gap,
    plots,
    report,
    sidecar_limits,
    sidecar_memory,
    sidecar_startup,
    webhook_handler,
    webhook_load,
)
from bench.common import PLOTS, RESULTS

STEPS = {
    "webhook_handler": webhook_handler.main,
    "webhook_load": webhook_load.main,
    "sidecar_startup": sidecar_startup.main,
    "sidecar_memory": sidecar_memory.main,
    "sidecar_limits": sidecar_limits.main,
    "migration_gap": migration_gap.main,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny counts, scratch output (CI smoke)")
    parser.add_argument("--out", type=Path, default=None, help="results directory (default bench/results)")
    parser.add_argument("--only", action="append", choices=sorted(STEPS), help="run only these (repeatable)")
    args = parser.parse_args(argv)
    out: Path = args.out or RESULTS
    plot_dir = PLOTS if args.out is None else out / "plots"
    for name in args.only or list(STEPS):
        started = time.monotonic()
        print(f"== {name}", flush=True)
        STEPS[name]([*(["--quick"] if args.quick else []), "--out", str(out)])
        print(f"   ({time.monotonic() - started:.0f} s)", flush=True)
    for path in plots.make_all(out, plot_dir):
        print(f"plot: {path}")
    doc = report.write(out, plot_dir, doc=None if args.out is None else out / "performance.md")
    print(f"tables: {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
