"""Plots of the benchmark results (PNG, from results/*.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.common import PLOTS, RESULTS, load_result


def latency_vs_concurrency(data: dict[str, Any], out: Path) -> Path:
    rows = data["rows"]
    conc = [r["concurrency"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(conc, [r["webhook"]["p50_ms"] for r in rows], "o-", label="webhook p50")
    ax.plot(conc, [r["webhook"]["p99_ms"] for r in rows], "s-", label="webhook p99, all requests")
    ax.plot(conc, [r["webhook"]["p99_steady_ms"] for r in rows], "^-", label="webhook p99, steady state")
    ax.plot(conc, [r["noop"]["p99_steady_ms"] for r in rows], "k--", label="ceiling: no-op p99, steady state")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(conc, [str(c) for c in conc])
    ax.set_xlabel("concurrent connections (hey, HTTPS keep-alive)")
    ax.set_ylabel("latency, ms (log)")
    ax.set_title("Webhook over HTTPS: /mutate/virtualmachineinstances, 1 uvicorn worker")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = out / "webhook_latency_vs_concurrency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def handler_cost_vs_interfaces(data: dict[str, Any], out: Path) -> Path:
    rows = [r for r in data["rows"] if r["interfaces"]]
    n = [r["interfaces"] for r in rows]
    core = [r["core"]["median_us"] for r in rows]
    asgi = [r["asgi"]["median_us"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(n, core, "o-", label="core: parse, decide, encode")
    ax.plot(n, asgi, "s-", label="whole app in-process (FastAPI, metrics)")
    # Linear growth from the 1-interface cost, for reference.
    ax.plot(n, [core[0] * k for k in n], ":", color="grey", label="linear from 1 interface")
    ax.axhline(200, color="red", alpha=0.4, label="target: 200 µs, typical VMI")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(n, [str(k) for k in n])
    ax.set_xlabel("interfaces in the VMI")
    ax.set_ylabel("µs per AdmissionReview (median, log)")
    ax.set_title("Webhook handler cost against interface count")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "webhook_handler_cost.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def migration_timeline(data: dict[str, Any], out: Path) -> Path | None:
    """Phases of one migration on a time axis (seconds from the migration call)."""
    events: list[tuple[str, float]] = data.get("timeline_example") or []
    if not events:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(events) + 1.2))
    for i, (label, at) in enumerate(events):
        ax.plot([at], [i], "o", color="C0")
        ax.annotate(f"{label}  ({at:.2f} s)", (at, i), xytext=(6, -3), textcoords="offset points", fontsize=8)
    ax.set_yticks([])
    ax.invert_yaxis()
    span = max(at for _, at in events)
    ax.set_xlim(min(0.0, *(at for _, at in events)) - 0.2, span * 1.45 + 0.5)
    ax.set_xlabel("seconds from the start of the live migration")
    ax.set_title(data.get("timeline_title", "One live migration, phase by phase"))
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    path = out / "migration_timeline.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def make_all(results: Path = RESULTS, out: Path = PLOTS) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    if (load := load_result(results, "webhook_load")) is not None:
        made.append(latency_vs_concurrency(load, out))
    if (handler := load_result(results, "webhook_handler")) is not None:
        made.append(handler_cost_vs_interfaces(handler, out))
    if (gap := load_result(results, "migration_gap")) is not None and (p := migration_timeline(gap, out)) is not None:
        made.append(p)
    return made


if __name__ == "__main__":
    for p in make_all():
        print(p)
