"""The webhook over HTTPS under load, from a separate process (``hey``, Debian's package).

One uvicorn worker with the production TLS setup serves both the real VMI mutator and, as
the ceiling, a no-op POST endpoint on the same stack (same app, middleware, TLS): our p99 is
reported as a ratio to the no-op's at each concurrency. ``hey`` speaks TLS (it does not
verify the certificate; the tests do that). Memory: RSS of the server idle and after the
whole run (100k requests in the full run).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, rss_kib, vmi_with_interfaces, write_result
from kubelab.ports import free_port
from kubelab.reviews import make_review
from lab.process import ProcessExitedError, stop, wait_for
from webhook.certs import CertFiles, CertificateAuthority

IMAGE = "registry.example/bridge-migration:bench"

SERVER = r"""
import sys
from fastapi import Request
from fastapi.responses import Response
import uvicorn
from webhook.config import WebhookConfig
from webhook.app import create_app
from webhook.server import build_runtime, uvicorn_config
from pathlib import Path
cert, key, port, image = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
config = WebhookConfig(host="127.0.0.1", port=port, tls_cert=Path(cert), tls_key=Path(key),
                       sidecar_image=image, sidecar_gate="on", log_level="warning")
rt = build_runtime(config)
app = create_app(rt)
EMPTY = b'{}'
# The ceiling: same app, same middleware and TLS, reads the body and answers a constant.
@app.post("/bench/noop")
async def noop(request: Request) -> Response:
    await request.body()
    return Response(EMPTY, media_type="application/json")
uvicorn.Server(uvicorn_config(rt, app)).run()
"""


def tls_and_body(prefix: str) -> tuple[CertFiles, Path]:
    """A throw-away certificate for the server and the request body every load run sends:
    a review of a typical VM-made VMI with one bridge interface."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    files = CertificateAuthority(work).issue(hosts=("localhost", "127.0.0.1"))
    body = work / "vmi.json"
    body.write_text(json.dumps(make_review(vmi_with_interfaces(1))))
    return files, body


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    def listening() -> bool:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True

    try:
        wait_for(listening, timeout=timeout_s, what=f"port {port}", proc=proc, ignore=(OSError,))
    except (TimeoutError, ProcessExitedError) as exc:
        raise SystemExit(f"bench server did not start: {exc}") from None


def run_hey(url: str, body_file: Path, *, concurrency: int, requests: int, qps_per_conn: int = 0) -> dict[str, Any]:
    hey = shutil.which("hey")
    if hey is None:
        raise SystemExit("hey not found: apt-get install hey (scripts/install.sh does)")
    out = subprocess.run(
        [hey, "-n", str(requests), "-c", str(concurrency), "-q", str(qps_per_conn), "-m", "POST",
         "-T", "application/json", "-D", str(body_file), "-o", "csv", url],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    lines = out.strip().splitlines()
    header = lines[0].split(",")
    i_lat, i_status, i_offset = header.index("response-time"), header.index("status-code"), header.index("offset")
    i_dial = header.index("DNS+dialup")
    lat, errors, offsets = [], 0, []
    rows: list[tuple[float, float, float]] = []  # (start offset, dial time, latency)
    for line in lines[1:]:
        cols = line.split(",")
        lat.append(float(cols[i_lat]))
        rows.append((float(cols[i_offset]), float(cols[i_dial]), float(cols[i_lat])))
        offsets.append(float(cols[i_offset]) + float(cols[i_lat]))
        if cols[i_status] != "200":
            errors += 1
    lat.sort()
    wall = max(offsets) if offsets else 0.0
    missing = requests - len(lat)  # connection errors never make it into the CSV
    # Steady state, as an apiserver (which keeps its connections to a webhook open) sees it:
    # requests on connections already open (no dial: no TCP connect, no TLS handshake) that
    # start after the first 20 % of the run, when every connection's handshake is over.
    steady = sorted(latency for offset, dial, latency in rows if dial == 0.0 and offset >= 0.2 * wall)

    def pct(values: list[float], p: float) -> float:
        return round(values[min(len(values) - 1, int(p * len(values)))] * 1000, 3) if values else float("nan")

    return {
        "concurrency": concurrency,
        "requests": requests,
        "errors": errors + missing,
        "rps": round(len(lat) / wall, 1) if wall else 0.0,
        "p50_ms": pct(lat, 0.50),
        "p99_ms": pct(lat, 0.99),
        "max_ms": round(lat[-1] * 1000, 3) if lat else float("nan"),
        "new_connections": sum(1 for _, dial, _ in rows if dial > 0.0),
        "p99_steady_ms": pct(steady, 0.99),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny counts (CI smoke)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    levels = (1, 10, 50, 200)
    per_level = 200 if args.quick else 5000
    files, body = tls_and_body("bm-bench-")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(files.cert), str(files.key), str(port), IMAGE])
    try:
        wait_listening(port, proc)
        time.sleep(0.5)
        idle_rss = rss_kib(proc.pid)
        base = f"https://127.0.0.1:{port}"
        rows = []
        for c in levels:
            ours = run_hey(base + "/mutate/virtualmachineinstances", body, concurrency=c, requests=per_level)
            ceiling = run_hey(base + "/bench/noop", body, concurrency=c, requests=per_level)
            # Compared in steady state: handshakes are the same fixed cost for both endpoints.
            ratio = round(ours["p99_steady_ms"] / ceiling["p99_steady_ms"], 2) if ceiling["p99_steady_ms"] else None
            rows.append({"concurrency": c, "webhook": ours, "noop": ceiling, "p99_ratio": ratio})
            print(f"c={c:<4} webhook p50 {ours['p50_ms']:7.2f} ms p99 {ours['p99_ms']:7.2f} ms "
                  f"(steady {ours['p99_steady_ms']:7.2f}) {ours['rps']:8.1f} rps err {ours['errors']} "
                  f"| noop p99 steady {ceiling['p99_steady_ms']:7.2f} ms | ratio {ratio}")  # fmt: skip
        # Closed-loop runs above measure saturation (latency = connections / throughput). An
        # apiserver sends far fewer reviews: paced, 50 connections at 5 requests/s each, the p99
        # shows the service time instead of the queue.
        paced = run_hey(
            base + "/mutate/virtualmachineinstances", body, concurrency=50, requests=per_level, qps_per_conn=5
        )
        print(f"paced 250 rps over 50 connections: p50 {paced['p50_ms']} ms p99 {paced['p99_ms']} ms")
        # Memory after a long run: the full bench sends 100k requests in total.
        soak = 2000 if args.quick else max(0, 100_000 - (2 * len(levels) + 1) * per_level)
        soak_errors = 0
        if soak:
            soak_errors = run_hey(base + "/mutate/virtualmachineinstances", body, concurrency=50, requests=soak)[
                "errors"
            ]
        total = 2 * per_level * len(levels) + per_level + soak
        after_rss = rss_kib(proc.pid)
        print(f"RSS idle {idle_rss / 1024:.1f} MiB, after {total} requests {after_rss / 1024:.1f} MiB")
    finally:
        stop(proc, grace=10)
    result = {
        "benchmark": "webhook_load",
        "quick": args.quick,
        "tool": "hey (TLS, keep-alive, one process)",
        "server": "uvicorn, 1 worker, TLS 1.2+/1.3",
        "requests_per_level": per_level,
        "rows": rows,
        "paced_50_conn_250_rps": paced,
        "memory": {"idle_rss_kib": idle_rss, "after_rss_kib": after_rss, "requests": total, "soak_errors": soak_errors},
    }
    write_result("webhook_load", result, args.out)
    return result


if __name__ == "__main__":
    main()
