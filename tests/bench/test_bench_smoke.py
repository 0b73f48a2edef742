"""The benchmarks still run (tiny counts, scratch output). Nothing here asserts a speed:
figures live in bench/results and docs/performance.md, produced by `python -m bench.run`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.lab
def test_every_benchmark_runs_and_writes_its_results_plots_and_tables(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(out)],
        check=False,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert set(results) == {
        "webhook_handler",
        "webhook_load",
        "sidecar_startup",
        "sidecar_limits",
        "sidecar_memory",
        "migration_gap",
    }
    assert [r["interfaces"] for r in results["webhook_handler"]["rows"]] == [1, 4, 16, 64, None]
    assert all(r["webhook"]["errors"] == 0 and r["noop"]["errors"] == 0 for r in results["webhook_load"]["rows"])
    same_mac = results["migration_gap"]["scenarios"]["same-mac"]
    assert same_mac["recovered"] == 1
    # The 10 ms probe saw the guest come back at the target pod's address.
    assert same_mac["stun_recovered"] == 1 and same_mac["stun_ms"]["median"] % 10 == 0
    assert results["sidecar_limits"]["runs"][0]["fixup"] == {"result": "unverified", "action": "reattach"}
    assert results["sidecar_memory"]["process"]["big_body_status"] == 413
    assert {p.name for p in (out / "plots").glob("*.png")} == {
        "webhook_latency_vs_concurrency.png",
        "webhook_handler_cost.png",
        "migration_timeline.png",
    }
    doc = (out / "performance.md").read_text()
    assert "Connectivity gap" in doc and "stun time" in doc
    assert "p99 / ceiling" in doc and "inside KubeVirt's limits" in doc
