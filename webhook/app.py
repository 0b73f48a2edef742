"""The HTTP shell: FastAPI routes that carry AdmissionReviews to the pure deciders.

Answers are built as bytes directly (no response-model encoding) because this code sits in
the path of every ``kubectl apply`` and its cost is counted in microseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bridge_migration_contract import DOMAIN_ANNOTATION, MIGRATION_JOB_UID_LABEL, vmi_managed_interfaces
from webhook.admission import BadReviewError, Review, parse_review, response
from webhook.config import WebhookConfig
from webhook.decision import Decision
from webhook.delivery import resolve_delivery
from webhook.kube import KubeClient, KubeError, NotFoundError, SidecarGateCache
from webhook.metrics import WebhookMetrics
from webhook.migration_validation import validate_migration
from webhook.openapi import admission_openapi
from webhook.pod_mutation import mutate_launcher_pod
from webhook.tls import ReloadingTLS
from webhook.vm_mutation import mutate_vm
from webhook.vmi_mutation import WARN_PREFIX, mutate_vmi, restore_dropped_macs

log = logging.getLogger(__name__)


class BodyTooLargeError(Exception):
    pass


@dataclass
class Runtime:
    """What the routes need besides the config; built by the server, replaceable in tests."""

    config: WebhookConfig
    gate: SidecarGateCache
    kube: KubeClient | None = None
    tls: ReloadingTLS | None = None
    metrics: WebhookMetrics | None = None


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


Decider = Callable[[Review, Runtime], Awaitable[Decision]]


async def _decide_vmi(review: Review, rt: Runtime) -> Decision:
    # A running VMI is never retrofitted, whoever sends the UPDATE: a MAC its guest does not have,
    # the allow annotation and a sidecar entry its pod does not run would make the next migration
    # strand it. An UPDATE only gets back a MAC we pinned that a re-apply dropped
    # (docs/kubevirt-facts.md K1, K2; the chart keeps KubeVirt's own writes away with matchConditions).
    if review.operation == "UPDATE":
        return restore_dropped_macs(review.obj, review.old_obj, config=rt.config)
    if review.operation != "CREATE":
        return Decision()
    return mutate_vmi(
        review.obj,
        namespace=review.namespace,
        config=rt.config,
        sidecar_gate_on=await rt.gate.current(),
        fallback_name=review.uid,
    )


async def _decide_vm(review: Review, rt: Runtime) -> Decision:
    # CREATE, and UPDATE too: a re-apply drops the pinned MAC from the template (a JSON merge patch
    # replaces the interfaces list) and the same decision puts the same MAC back; a VM made before
    # the install is pinned at its next UPDATE and runs so at its next start (docs/install.md).
    if review.operation not in ("CREATE", "UPDATE"):
        return Decision()
    decision = mutate_vm(
        review.obj, namespace=review.namespace, config=rt.config, sidecar_gate_on=await rt.gate.current()
    )
    if review.operation == "UPDATE" and not decision.patch:
        decision.warnings = []  # said at CREATE; not on every edit
    return decision


async def _decide_pod(review: Review, rt: Runtime) -> Decision:
    if review.operation != "CREATE":
        return Decision()
    metadata = review.obj["metadata"]
    ann = metadata.get("annotations") or {}
    vmi_macs: dict[str, str] | None = None
    pod_ifaces: list[str] | None = None
    is_target = MIGRATION_JOB_UID_LABEL in (metadata.get("labels") or {})
    vmi_name = ann.get(DOMAIN_ANNOTATION)
    warnings: list[str] = []
    if (
        is_target
        and rt.kube is not None
        and vmi_name
        and (rt.config.cni_mac_annotation or rt.config.keys.macs not in ann)
    ):
        try:
            vmi = await rt.kube.get_vmi(review.namespace, vmi_name)
        except KubeError as exc:
            warnings.append(f"{WARN_PREFIX}could not read VMI {vmi_name}: {exc}")
        else:
            managed = vmi_managed_interfaces(vmi, rt.config.keys)
            pod_ifaces = [i["name"] for i in managed if i["network"] == "pod"]
            vmi_macs = {i["name"]: i["mac"] for i in managed if i["mac"]}
    await rt.gate.current()  # refreshes the observed KubeVirt version with the gate when stale
    decision = mutate_launcher_pod(
        review.obj,
        config=rt.config,
        vmi_macs=vmi_macs,
        pod_network_interfaces=pod_ifaces,
        kubevirt_version=rt.gate.kubevirt_version,
    )
    decision.warnings[:0] = warnings
    return decision


async def _decide_migration(review: Review, rt: Runtime) -> Decision:
    if review.operation != "CREATE":
        return Decision()
    vmi_name = (review.obj.get("spec") or {}).get("vmiName")
    if not isinstance(vmi_name, str) or not vmi_name:
        return Decision.deny("spec.vmiName is missing", code=400)
    if rt.kube is None:
        problem = "no Kubernetes API access configured (--kubeconfig or in-cluster), cannot check the VMI"
    else:
        try:
            vmi = await rt.kube.get_vmi(review.namespace, vmi_name)
        except NotFoundError:
            return Decision.deny(f"VirtualMachineInstance {review.namespace}/{vmi_name} not found", code=404)
        except KubeError as exc:
            problem = f"could not read VMI {review.namespace}/{vmi_name}: {exc}"
        else:
            return validate_migration(review.obj, vmi, namespace=review.namespace, config=rt.config)
    # The API read failed: strict mode refuses what it cannot check, warn mode lets it through.
    if rt.config.validation == "strict":
        return Decision.deny(f"{WARN_PREFIX}{problem}", code=503)
    return Decision(warnings=[f"{WARN_PREFIX}{problem}; migration not checked"])


async def _decide_in_stance(
    decide: Decider, review: Review, rt: Runtime, *, endpoint: str, fail_open: bool
) -> tuple[Decision, bool]:
    """The decision, within the deadline; on a timeout or a bug, the endpoint's own stance: the
    mutators (and warn-mode validation) admit unchanged, strict validation refuses. Never a 500
    the apiserver would turn into a failed create. Second item: whether it was a bug."""
    try:
        async with asyncio.timeout(rt.config.request_deadline_s):
            return await decide(review, rt), False
    except TimeoutError:
        msg = f"{WARN_PREFIX}no answer within {rt.config.request_deadline_s}s"
        return (Decision(warnings=[msg]) if fail_open else Decision.deny(msg, code=504)), False
    except Exception:
        log.exception("%s: unexpected error on %s", endpoint, review.uid)
        msg = f"{WARN_PREFIX}internal error"
        if fail_open:
            return Decision(warnings=[f"{msg}, object admitted unchanged"]), True
        return Decision.deny(f"{msg}; refused (strict validation)", code=500), True


def create_app(rt: Runtime, *, background: bool = True) -> FastAPI:
    metrics = rt.metrics or WebhookMetrics()
    rt.metrics = metrics

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        tasks: list[asyncio.Task[None]] = []
        if background:
            tasks.append(asyncio.create_task(rt.gate.run()))
            if rt.tls is not None:
                tasks.append(asyncio.create_task(rt.tls.watch(rt.config.tls_reload_s)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            if rt.kube is not None:
                await rt.kube.aclose()

    app = FastAPI(title="bridge-migration webhook", version="0.1.0", lifespan=lifespan)

    def route(endpoint: str, expect_kind: str, decide: Decider, *, fail_open: bool) -> None:
        async def handler(request: Request) -> Response:
            started = time.perf_counter()
            try:
                body = await _read_body(request, rt.config.max_body_bytes)
                review = parse_review(body, expect_kind=expect_kind)
            except BodyTooLargeError:
                metrics.requests.labels(endpoint, "bad_request").inc()
                return JSONResponse({"error": f"body larger than {rt.config.max_body_bytes} bytes"}, 413)
            except BadReviewError as exc:
                metrics.requests.labels(endpoint, "bad_request").inc()
                return JSONResponse({"error": str(exc)}, 400)
            decision, errored = await _decide_in_stance(decide, review, rt, endpoint=endpoint, fail_open=fail_open)
            out = json.dumps(response(review, decision), separators=(",", ":")).encode()
            metrics.requests.labels(endpoint, "error" if errored else _verdict(decision)).inc()
            if decision.patch:
                metrics.patch_ops.labels(endpoint).inc(len(decision.patch))
            metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
            return Response(out, media_type="application/json")

        app.add_api_route(
            f"/{endpoint}",
            handler,
            methods=["POST"],
            name=endpoint,
            **admission_openapi(expect_kind),
        )

    route("mutate/virtualmachineinstances", "VirtualMachineInstance", _decide_vmi, fail_open=True)
    route("mutate/virtualmachines", "VirtualMachine", _decide_vm, fail_open=True)
    route("mutate/pods", "Pod", _decide_pod, fail_open=True)
    route(
        "validate/virtualmachineinstancemigrations",
        "VirtualMachineInstanceMigration",
        _decide_migration,
        fail_open=rt.config.validation == "warn",
    )

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/readyz", responses={503: {"description": "not ready: TLS files not loaded"}})
    async def readyz() -> Response:
        if rt.tls is None and not rt.config.dev:
            return JSONResponse({"ready": False, "reason": "TLS files not loaded"}, 503)
        # Ready to admit even without the API (admission then degrades as documented); the body
        # says how the API looks, so an admin sees a missing permission or an unreachable server.
        if rt.kube is None:
            api = "not configured"
        elif rt.gate.read_ok is None:
            api = "not read yet"
        else:
            api = "reachable" if rt.gate.read_ok else "failing"
        return JSONResponse(
            {
                "ready": True,
                "api": api,
                "sidecarGate": rt.gate.value,
                "sidecarGateSource": rt.config.sidecar_gate,
                # What a new VMI gets now: auto resolved by the gate as last read.
                "delivery": resolve_delivery(rt.config.delivery, sidecar_gate_on=rt.gate.value),
                "gateError": rt.gate.last_error,
            }
        )

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}, "description": "Prometheus text format"}},
    )
    async def prom() -> Response:
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
