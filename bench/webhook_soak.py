"""Soak: the webhook under a steady rate for minutes (a bench mode, not run in CI).

``hey`` sends VMI reviews over HTTPS at a fixed rate (``--rps``) for ``--minutes``; RSS of the
server process is sampled every ``--sample-s`` seconds. Pass: no errors, RSS flat (the growth
after the first minute stays within noise).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, rss_kib, write_result
from bench.webhook_load import IMAGE, SERVER, tls_and_body, wait_listening
from kubelab.ports import free_port
from lab.process import stop


def parse_hey_summary(out: str) -> tuple[dict[str, int], int]:
    """Status-code counts and transport errors from hey's text summary."""
    codes: dict[str, int] = {}
    transport_errors = 0
    in_errors = False
    for raw in out.splitlines():
        text = raw.strip()
        if text.startswith("Error distribution"):
            in_errors = True
        elif text.startswith("[") and "]" in text:
            head, tail = text[1:].split("]", 1)
            if in_errors:
                transport_errors += int(head)
            elif tail.strip().endswith("responses"):
                codes[head] = int(tail.split()[0])
    return codes, transport_errors


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rps", type=int, default=200, help="total requests per second (default %(default)s)")
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    hey = shutil.which("hey")
    if hey is None:
        raise SystemExit("hey not found: apt-get install hey (scripts/install.sh does)")
    files, body = tls_and_body("bm-soak-")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(files.cert), str(files.key), str(port), IMAGE])
    samples: list[tuple[float, int]] = []
    try:
        wait_listening(port, server)
        started = time.monotonic()
        sampled_enough = threading.Event()

        def sample() -> None:
            while not sampled_enough.is_set():
                samples.append((round(time.monotonic() - started, 1), rss_kib(server.pid)))
                sampled_enough.wait(args.sample_s)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        per_worker = max(1, args.rps // args.connections)
        out = subprocess.run(
            [hey, "-z", f"{int(args.minutes * 60)}s", "-c", str(args.connections), "-q", str(per_worker),
             "-m", "POST", "-T", "application/json", "-D", str(body),
             f"https://127.0.0.1:{port}/mutate/virtualmachineinstances"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        sampled_enough.set()
        sampler.join()
        samples.append((round(time.monotonic() - started, 1), rss_kib(server.pid)))
    finally:
        stop(server, grace=10)
    codes, transport_errors = parse_hey_summary(out)
    total = sum(codes.values())
    errors = total - codes.get("200", 0) + transport_errors
    after_first_minute = [kib for t, kib in samples if t >= 60] or [kib for _, kib in samples]
    result = {
        "benchmark": "webhook_soak",
        "minutes": args.minutes,
        "target_rps": per_worker * args.connections,
        "requests": total,
        "status_codes": codes,
        "errors": errors,
        "transport_errors": transport_errors,
        "rss_samples_kib": samples,
        "rss_growth_after_first_minute_kib": max(after_first_minute) - min(after_first_minute),
    }
    write_result("webhook_soak", result, args.out)
    print(f"soak {args.minutes} min at {result['target_rps']} rps: {total} requests, codes {codes}, "
          f"RSS {samples[0][1] / 1024:.1f} -> {samples[-1][1] / 1024:.1f} MiB "
          f"(growth after 1st minute {result['rss_growth_after_first_minute_kib']} KiB)")  # fmt: skip
    return result


if __name__ == "__main__":
    main()
