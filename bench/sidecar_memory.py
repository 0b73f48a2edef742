"""The sidecar's memory: what each import costs, and RSS idle, after REST calls and a huge body.

Two parts, no lab needed (libvirt's test driver):
- the import floor: RSS after each group of imports, in one fresh interpreter, with the OpenSSL
  bindings blocked as ``python -m sidecar`` blocks them;
- the process: ``python -m sidecar serve`` with a hook directory (as in a pod), RSS idle, after
  2,000 REST calls from 4 clients (/healthz, /v1/status, /v1/fixups, /metrics, a dry-run fixup),
  after GET /openapi.json and after one 20 MB ``POST /v1/fixup``.

``--sidecar-root DIR --name sidecar_memory_0.1.0`` runs the process part against another checkout
(a git worktree of release 0.1.0: ``git worktree add /tmp/before 492eb62``), for the before/after
table in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import RESULTS, write_result
from kubelab.ports import free_port
from lab.process import stop, wait_for

REPO = Path(__file__).resolve().parents[1]

_IMPORTS = """
import importlib, json, sys
for name in ("ssl", "_ssl", "_hashlib"):
    sys.modules[name] = None
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
groups = json.loads(sys.argv[1])
rows = [["the interpreter", rss()]]
for name, modules in groups:
    for module in modules:
        importlib.import_module(module)
    rows.append([name, rss()])
print(json.dumps(rows))
"""
GROUPS = [
    ("libvirt-python", ["libvirt"]),
    (
        "standard library the sidecar uses",
        ["logging", "json", "argparse", "ipaddress", "threading", "queue", "xml.etree.ElementTree", "dataclasses"],
    ),
    ("msgspec (wire models)", ["msgspec", "sidecar.core.models"]),
    (
        "our core, engine, watcher, triggers, metrics",
        [
            "sidecar.core.plan",
            "sidecar.fixer.executor",
            "sidecar.fixer.engine",
            "sidecar.fixer.metrics",
            "sidecar.pod.wiring",
        ],
    ),
    ("asyncio + h11 + the REST server", ["asyncio", "h11", "sidecar.pod.rest", "sidecar.pod.serve"]),
    ("grpclib + h2 + protobuf + the hook server", ["sidecar.pod.hook_server"]),
]


def import_floor() -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-c", _IMPORTS, json.dumps(GROUPS)], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    rows = json.loads(out)
    table = []
    for (name, kib), (_prev_name, prev_kib) in zip(rows, [[None, None], *rows[:-1]], strict=True):
        table.append(
            {
                "import": name,
                "adds_mib": None if prev_kib is None else round((kib - prev_kib) / 1024, 1),
                "rss_mib": round(kib / 1024, 1),
            }
        )
    return table


def _status(pid: int) -> dict[str, float]:
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return fields


def _call(base: str, method: str, path: str, body: bytes | None = None) -> int:
    req = urllib.request.Request(base + path, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return int(exc.code)


def process_run(*, root: Path, rounds: int, clients: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bm-sidecar-mem-"))
    (work / "hooks").mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable, "-m", "sidecar", "serve", "--libvirt-uri", "test:///default", "--domain", "test",
        "--listen", f"127.0.0.1:{port}", "--hook-socket-dir", str(work / "hooks"),
        "--pod-annotations", str(work / "annotations"), "--log-level", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(
            lambda: _call(base, "GET", "/healthz") > 0,  # any HTTP answer
            timeout=60,
            interval=0.05,
            what=f"the sidecar answering on {base}",
            proc=proc,
            ignore=(OSError,),
        )
        time.sleep(2)
        idle = _status(proc.pid)
        codes: dict[int, int] = {}
        lock = threading.Lock()

        def burst() -> None:
            for _ in range(rounds):
                for method, path, body in (
                    ("GET", "/healthz", None),
                    ("GET", "/v1/status", None),
                    ("GET", "/v1/fixups", None),
                    ("GET", "/metrics", None),
                    ("POST", "/v1/fixup", b'{"dryRun": true}'),
                ):
                    code = _call(base, method, path, body)
                    with lock:
                        codes[code] = codes.get(code, 0) + 1

        threads = [threading.Thread(target=burst) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after_calls = _status(proc.pid)
        _call(base, "GET", "/openapi.json")
        after_openapi = _status(proc.pid)
        try:
            big: int | str = _call(base, "POST", "/v1/fixup", b"x" * 20_000_000)
        except OSError as exc:
            big = type(exc).__name__
        after_big = _status(proc.pid)
    finally:
        stop(proc, grace=30)
    return {
        "root": str(root),
        "rest_calls": rounds * clients * 5,
        "status_codes": {str(k): v for k, v in sorted(codes.items())},
        "big_body_status": big,
        "idle": idle,
        "after_calls": after_calls,
        "after_openapi": after_openapi,
        "after_20mb_body": after_big,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20 calls (CI smoke)")
    parser.add_argument("--sidecar-root", type=Path, default=REPO, help="checkout whose sidecar runs")
    parser.add_argument("--name", default="sidecar_memory", help="result file name (e.g. sidecar_memory_0.1.0)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else 100
    result: dict[str, Any] = {
        "benchmark": "sidecar_memory",
        "quick": args.quick,
        "imports": import_floor(),
        "process": process_run(root=args.sidecar_root, rounds=rounds, clients=4),
    }
    write_result(args.name, result, args.out)
    p = result["process"]
    print(
        f"sidecar RSS: idle {p['idle']['VmRSS']} MiB, after {p['rest_calls']} calls {p['after_calls']['VmRSS']} MiB, "
        f"after a 20 MB body ({p['big_body_status']}) {p['after_20mb_body']['VmRSS']} MiB; "
        f"import floor {result['imports'][-1]['rss_mib']} MiB"
    )
    return result


if __name__ == "__main__":
    main()
