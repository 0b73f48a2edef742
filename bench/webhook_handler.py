"""Webhook handler cost in-process: microseconds per AdmissionReview.

Two layers, both without a network: ``core`` is our own work (parse the review, decide,
encode the answer); ``asgi`` is the whole FastAPI app called as uvicorn calls it (routing,
body reading, metrics). VMIs with 1, 4, 16 and 64 interfaces, and a 10 KiB launcher pod.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

from bench.common import RESULTS, launcher_pod_10k, vmi_with_interfaces, write_result
from kubelab.reviews import make_review
from webhook.admission import parse_review, response
from webhook.app import create_app
from webhook.config import WebhookConfig
from webhook.kube import SidecarGateCache
from webhook.orchestration import Runtime
from webhook.pod_mutation import mutate_launcher_pod
from webhook.vmi_mutation import mutate_vmi

IMAGE = "registry.example/bridge-migration:bench"
CONFIG = WebhookConfig(sidecar_image=IMAGE, cni_mac_annotation="cni.projectcalico.org/hwAddr")


def per_call_us(fn: Callable[[], object], *, rounds: int, per_round: int) -> dict[str, float]:
    for _ in range(per_round):  # warm-up
        fn()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(per_round):
            fn()
        samples.append((time.perf_counter_ns() - start) / per_round / 1000)
    return {"median_us": round(statistics.median(samples), 2), "min_us": round(min(samples), 2)}


def core_vmi(body: bytes) -> Callable[[], object]:
    def run() -> object:
        review = parse_review(body, expect_kind="VirtualMachineInstance")
        decision = mutate_vmi(review.obj, namespace=review.namespace, config=CONFIG, sidecar_gate_on=True)
        return json.dumps(response(review, decision), separators=(",", ":")).encode()

    return run


def core_pod(body: bytes) -> Callable[[], object]:
    def run() -> object:
        review = parse_review(body, expect_kind="Pod")
        decision = mutate_launcher_pod(review.obj, config=CONFIG, pod_network_interfaces=["default"])
        return json.dumps(response(review, decision), separators=(",", ":")).encode()

    return run


def asgi_call(path: str, body: bytes) -> Callable[[], object]:
    rt = Runtime(config=CONFIG, gate=SidecarGateCache(None, forced=True, refresh_s=30))
    app = create_app(rt, background=False)
    loop = asyncio.new_event_loop()
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "https",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8443),
    }  # fmt: skip

    async def once() -> int:
        sent = False
        status = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(dict(scope), receive, send)
        if status != 200:
            raise RuntimeError(f"HTTP {status}")
        return status

    def run() -> object:
        return loop.run_until_complete(once())

    return run


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny counts (CI smoke)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rounds, per_round = (3, 20) if args.quick else (15, 400)
    rows: list[dict[str, Any]] = []
    for n in (1, 4, 16, 64):
        body = json.dumps(make_review(vmi_with_interfaces(n))).encode()
        rows.append(
            {
                "case": f"VMI, {n} interface{'s' if n > 1 else ''}",
                "interfaces": n,
                "body_bytes": len(body),
                "core": per_call_us(core_vmi(body), rounds=rounds, per_round=per_round),
                "asgi": per_call_us(
                    asgi_call("/mutate/virtualmachineinstances", body), rounds=rounds, per_round=per_round
                ),
            }
        )
    pod_body = json.dumps(make_review(launcher_pod_10k(IMAGE))).encode()
    rows.append(
        {
            "case": "virt-launcher pod, 10 KiB",
            "interfaces": None,
            "body_bytes": len(pod_body),
            "core": per_call_us(core_pod(pod_body), rounds=rounds, per_round=per_round),
            "asgi": per_call_us(asgi_call("/mutate/pods", pod_body), rounds=rounds, per_round=per_round),
        }
    )
    result = {
        "benchmark": "webhook_handler",
        "quick": args.quick,
        "rounds": rounds,
        "per_round": per_round,
        "rows": rows,
    }
    write_result("webhook_handler", result, args.out)
    for row in rows:
        print(f"{row['case']:<28} {row['body_bytes']:>7} B  core {row['core']['median_us']:>8.1f} us"
              f"  asgi {row['asgi']['median_us']:>8.1f} us")  # fmt: skip
    return result


if __name__ == "__main__":
    main()
