"""Which server stack: uvicorn's pure-Python defaults (asyncio loop, h11 parser) against
uvloop + httptools, same app, same TLS, same load, runs interleaved (A B A B ...) so that a
busy machine hurts both alike. The figures decide the project's dependency choice."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import RESULTS, write_result
from bench.webhook_load import IMAGE, run_hey, tls_and_body, wait_listening
from kubelab.ports import free_port
from lab.process import stop

SERVER = r"""
import sys
import uvicorn
from pathlib import Path
from webhook.config import WebhookConfig
from webhook.app import create_app
from webhook.server import build_runtime, uvicorn_config
cert, key, port, image, loop, http = sys.argv[1:7]
config = WebhookConfig(host="127.0.0.1", port=int(port), tls_cert=Path(cert), tls_key=Path(key),
                       sidecar_image=image, sidecar_gate="on", log_level="warning")
rt = build_runtime(config)
uvicorn.Server(uvicorn_config(rt, create_app(rt), loop=loop, http=http)).run()
"""

STACKS = {"asyncio+h11": ("asyncio", "h11"), "uvloop+httptools": ("uvloop", "httptools")}


def measure(stack: str, files: Any, body: Path, *, concurrency: int, requests: int) -> dict[str, Any]:
    port = free_port()
    loop, http = STACKS[stack]
    cmd = [sys.executable, "-c", SERVER, str(files.cert), str(files.key), str(port), IMAGE, loop, http]
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, proc)
        run_hey(f"https://127.0.0.1:{port}/mutate/virtualmachineinstances", body, concurrency=concurrency, requests=200)
        return run_hey(
            f"https://127.0.0.1:{port}/mutate/virtualmachineinstances", body, concurrency=concurrency, requests=requests
        )
    finally:
        stop(proc, grace=10)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    files, body = tls_and_body("bm-stack-")
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in STACKS}
    for _ in range(args.rounds):
        for stack in STACKS:
            runs[stack].append(measure(stack, files, body, concurrency=args.concurrency, requests=args.requests))
            r = runs[stack][-1]
            print(f"{stack:<18} rps {r['rps']:8.1f}  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms", r["errors"])
    summary = {
        stack: {key: round(statistics.median(r[key] for r in rs), 2) for key in ("rps", "p50_ms", "p99_ms", "errors")}
        for stack, rs in runs.items()
    }
    result = {"benchmark": "stack_choice", "concurrency": args.concurrency, "summary": summary, "runs": runs}
    write_result("stack_choice", result, args.out)
    print(json.dumps(summary, indent=2))
    return result


if __name__ == "__main__":
    main()
