"""REST API on loopback: health, status, manual fixup, history, Prometheus metrics."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import libvirt
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sidecar.engine import Fixer
from sidecar.errors import LibvirtUnavailableError, NoDomainError, UnknownInterfaceError
from sidecar.metrics import Metrics
from sidecar.models import ErrorBody, FixupRecord, FixupRequest, Health, Status


class SidecarView(Protocol):
    fixer: Fixer
    metrics: Metrics

    def health(self) -> Health: ...
    def status(self) -> Status: ...


def _error(status: int, detail: str, known: list[str] | None = None) -> JSONResponse:
    body = ErrorBody(detail=detail, known_interfaces=known)
    return JSONResponse(status_code=status, content=body.model_dump(by_alias=True, exclude_none=True))


log = logging.getLogger(__name__)

# Open without the token: kubelet probes carry no credentials, and health says nothing a
# caller could misuse (no MACs, no domain, no fixups).
OPEN_PATHS = frozenset({"/healthz"})


def authorized(header: str | None, token: str) -> bool:
    """True when an Authorization header carries this bearer token (constant-time compare)."""
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode(), token.encode())


def create_app(sidecar: SidecarView, *, token: str | None = None) -> FastAPI:
    app = FastAPI(title="bridge-migration sidecar", version="1")

    if token is not None:
        expected = token

        @app.middleware("http")
        async def require_token(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
            if request.url.path in OPEN_PATHS or authorized(request.headers.get("authorization"), expected):
                return await call_next(request)
            body = ErrorBody(detail="missing or wrong bearer token").model_dump(by_alias=True, exclude_none=True)
            return JSONResponse(status_code=401, content=body, headers={"WWW-Authenticate": "Bearer"})

    errors: dict[int | str, dict[str, Any]] = {
        404: {"model": ErrorBody, "description": "Unknown interface name"},
        409: {"model": ErrorBody, "description": "No domain to look after yet"},
        503: {"model": ErrorBody, "description": "libvirt is not reachable"},
    }

    @app.exception_handler(NoDomainError)
    async def no_domain(req: Request, exc: NoDomainError) -> JSONResponse:
        log.info("%s %s refused (409): %s", req.method, req.url.path, exc)
        return _error(409, str(exc))

    @app.exception_handler(LibvirtUnavailableError)
    async def libvirt_down(req: Request, exc: LibvirtUnavailableError) -> JSONResponse:
        log.warning("%s %s refused (503): %s", req.method, req.url.path, exc)
        return _error(503, str(exc))

    @app.exception_handler(libvirt.libvirtError)
    async def libvirt_failed(req: Request, exc: libvirt.libvirtError) -> JSONResponse:
        log.warning("%s %s failed (503): libvirt call failed: %s", req.method, req.url.path, exc)
        return _error(503, f"libvirt call failed: {exc}")

    @app.exception_handler(UnknownInterfaceError)
    async def unknown_interface(_req: Request, exc: UnknownInterfaceError) -> JSONResponse:
        return _error(404, str(exc), exc.known)

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}})
    def healthz() -> Any:
        health = sidecar.health()
        if not health.ok:
            return JSONResponse(status_code=503, content=health.model_dump(by_alias=True))
        return health

    @app.get("/v1/status", response_model=Status, response_model_by_alias=True)
    def status() -> Status:
        return sidecar.status()

    failed: dict[int | str, dict[str, Any]] = {
        500: {"model": FixupRecord, "description": "The fixup ran and failed (the record says how)"}
    }

    @app.post("/v1/fixup", response_model=FixupRecord, responses=errors | failed, response_model_by_alias=True)
    def fixup(body: FixupRequest | None = None) -> Any:
        body = body or FixupRequest()
        record = sidecar.fixer.run(trigger="manual", interfaces=body.interfaces, dry_run=body.dry_run, force=body.force)
        if record.result == "failed":
            # A non-2xx lets `curl -f` in a launcher hook notice.
            return JSONResponse(status_code=500, content=record.model_dump(mode="json", by_alias=True))
        return record

    @app.get("/v1/fixups", response_model=list[FixupRecord], response_model_by_alias=True)
    def fixups() -> list[FixupRecord]:
        return sidecar.fixer.history()

    @app.get("/metrics", response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(sidecar.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
