"""The HTTP shell: FastAPI routes that carry AdmissionReviews to ``webhook.orchestration``.

Answers are built as bytes directly (no response-model encoding) because this code sits in
the path of every ``kubectl apply`` and its cost is counted in microseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from webhook import __version__
from webhook.admission import BadReviewError, parse_review, response
from webhook.decision import Decision
from webhook.decision_log import log_bad_review, log_decision
from webhook.delivery import resolve_delivery
from webhook.metrics import WebhookMetrics
from webhook.openapi import admission_openapi
from webhook.orchestration import (
    TARGET_POD_REFUSED,
    Decider,
    Runtime,
    decide_in_stance,
    decide_migration,
    decide_pod,
    decide_target_pod,
    decide_vm,
    decide_vmi,
)


class BodyTooLargeError(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


def _verdict(decision: Decision) -> str:
    if not decision.allowed:
        return "denied"
    if decision.patch:
        return "patched"
    return "warned" if decision.warnings else "allowed"


@contextlib.asynccontextmanager
async def _running(rt: Runtime, metrics: WebhookMetrics, *, background: bool) -> AsyncIterator[None]:
    """The app's lifespan: the gate's refresh and the TLS files' watch run beside it (unless
    ``background`` is off, as in tests that drive the app in-process); the API client closes after."""
    tasks: list[asyncio.Task[None]] = []
    if background:
        tasks.append(asyncio.create_task(rt.gate.run()))
        if rt.tls is not None:
            reloads = metrics.tls_reloads
            watch = rt.tls.watch(rt.config.tls_reload_s, lambda result: reloads.labels(result).inc())
            tasks.append(asyncio.create_task(watch))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        if rt.kube is not None:
            await rt.kube.aclose()


class Route(NamedTuple):
    """One admission endpoint: its path (no leading slash), the kind it admits, its decider, and
    its stance on a timeout or a bug: admit unchanged (``fail_open``) or refuse, saying ``refused``."""

    endpoint: str
    kind: str
    decide: Decider
    fail_open: bool
    refused: str | None = None


def admission_routes(rt: Runtime) -> list[Route]:
    """The five admission endpoints; each fails open but strict migration validation and the
    migration target pods' route (the chart's failurePolicy Fail entry: fail closed inside too)."""
    return [
        Route("mutate/virtualmachineinstances", "VirtualMachineInstance", decide_vmi, fail_open=True),
        Route("mutate/virtualmachines", "VirtualMachine", decide_vm, fail_open=True),
        Route("mutate/pods", "Pod", decide_pod, fail_open=True),
        Route("mutate/migration-target-pods", "Pod", decide_target_pod, fail_open=False, refused=TARGET_POD_REFUSED),
        Route(
            "validate/virtualmachineinstancemigrations",
            "VirtualMachineInstanceMigration",
            decide_migration,
            fail_open=rt.config.validation == "warn",
            refused="refused (strict validation)",
        ),
    ]


def _admission_handler(rt: Runtime, metrics: WebhookMetrics, route: Route) -> Callable[[Request], Awaitable[Response]]:
    """The handler of one admission endpoint: body in, decision by its decider, review answer out."""
    endpoint, expect_kind = route.endpoint, route.kind

    async def handler(request: Request) -> Response:
        started = time.perf_counter()
        try:
            body = await _read_body(request, rt.config.max_body_bytes)
            review = parse_review(body, expect_kind=expect_kind)
        except BodyTooLargeError:
            return _bad_request(413, f"body larger than {rt.config.max_body_bytes} bytes")
        except BadReviewError as exc:
            return _bad_request(400, str(exc))
        decision, errored = await decide_in_stance(
            route.decide, review, rt, endpoint=endpoint, fail_open=route.fail_open, refused=route.refused
        )
        out = json.dumps(response(review, decision), separators=(",", ":")).encode()
        verdict = "error" if errored else _verdict(decision)
        metrics.requests.labels(endpoint, verdict).inc()
        if decision.patch:
            metrics.patch_ops.labels(endpoint).inc(len(decision.patch))
        took = time.perf_counter() - started
        metrics.latency.labels(endpoint).observe(took)
        # The one place every endpoint's answer passes: its decision line, under the metric's verdict.
        log_decision(review, decision, endpoint=endpoint, kind=expect_kind, verdict=verdict, seconds=took)
        return Response(out, media_type="application/json")

    def _bad_request(status: int, error: str) -> Response:
        metrics.requests.labels(endpoint, "bad_request").inc()
        log_bad_review(endpoint=endpoint, kind=expect_kind, status=status, reason=error)
        return JSONResponse({"error": error}, status)

    return handler


def _add_admission_routes(app: FastAPI, rt: Runtime, metrics: WebhookMetrics) -> None:
    for route in admission_routes(rt):
        app.add_api_route(
            f"/{route.endpoint}",
            _admission_handler(rt, metrics, route),
            methods=["POST"],
            name=route.endpoint,
            **admission_openapi(route.kind),
        )


def readiness(rt: Runtime) -> tuple[int, dict[str, Any]]:
    """``/readyz``'s status and body: ready once TLS is loaded (or in dev mode)."""
    if rt.tls is None and not rt.config.dev:
        return 503, {"ready": False, "reason": "TLS files not loaded"}
    # Ready to admit even without the API (admission then degrades as documented); the body
    # says how the API looks, so an admin sees a missing permission or an unreachable server.
    if rt.kube is None:
        api = "not configured"
    elif rt.gate.read_ok is None:
        api = "not read yet"
    else:
        api = "reachable" if rt.gate.read_ok else "failing"
    return 200, {
        "ready": True,
        "api": api,
        "sidecarGate": rt.gate.value,
        "sidecarGateSource": rt.config.sidecar_gate,
        # What a new VMI gets now: auto resolved by the gate as last read.
        "delivery": resolve_delivery(rt.config.delivery, sidecar_gate_on=rt.gate.value),
        # What inject and node delivery need to act (docs/webhook.md, "Delivery").
        "pluginsGate": rt.gate.plugins,
        "rootGate": rt.gate.root,
        "nodeAgent": rt.config.node_agent,
        "gateError": rt.gate.last_error,
    }


def _add_probe_routes(app: FastAPI, rt: Runtime, metrics: WebhookMetrics) -> None:
    """``/healthz``, ``/readyz`` and ``/metrics`` (the functions' names are the OpenAPI operation ids)."""

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/readyz", responses={503: {"description": "not ready: TLS files not loaded"}})
    async def readyz() -> Response:
        status, body = readiness(rt)
        return JSONResponse(body, status)

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}, "description": "Prometheus text format"}},
    )
    async def prom() -> Response:
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def create_app(rt: Runtime, *, background: bool = True) -> FastAPI:
    metrics = rt.metrics or WebhookMetrics()
    rt.metrics = metrics
    app = FastAPI(
        title="bridge-migration webhook",
        version=__version__,
        lifespan=lambda _: _running(rt, metrics, background=background),
        # /openapi.json stays (our own schema, webhook/openapi.py); the pages only if asked for.
        docs_url="/docs" if rt.config.api_docs else None,
        redoc_url="/redoc" if rt.config.api_docs else None,
    )
    _add_admission_routes(app, rt, metrics)
    _add_probe_routes(app, rt, metrics)
    return app
