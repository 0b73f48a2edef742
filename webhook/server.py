"""Running the app under uvicorn with our own reloadable TLS context."""

from __future__ import annotations

import logging
import sys

import uvicorn
from starlette.types import ASGIApp

from webhook.app import create_app
from webhook.config import WebhookConfig
from webhook.kube import KubeClient, KubeError, SidecarGateCache, target_from_kubeconfig, target_in_cluster
from webhook.orchestration import Runtime
from webhook.tls import ReloadingTLS

log = logging.getLogger(__name__)


def build_runtime(config: WebhookConfig) -> Runtime:
    assert config.tls_cert is not None and config.tls_key is not None
    kube: KubeClient | None = None
    if config.kubeconfig is not None:
        # Asked for explicitly: a kubeconfig that cannot be used stops the webhook (KubeError
        # reaches the caller), rather than serving as if there were no API at all.
        kube = KubeClient(target_from_kubeconfig(config.kubeconfig), timeout_s=config.api_timeout_s)
    else:
        try:
            kube = KubeClient(target_in_cluster(), timeout_s=config.api_timeout_s)
        except KubeError as exc:
            log.warning("no Kubernetes API access: %s (migrations cannot be checked; gate 'auto' reads nothing)", exc)
    forced = {"on": True, "off": False}.get(config.sidecar_gate)
    gate = SidecarGateCache(kube, forced=forced, refresh_s=config.gate_refresh_s)
    return Runtime(config=config, gate=gate, kube=kube, tls=ReloadingTLS(config.tls_cert, config.tls_key))


def uvicorn_config(rt: Runtime, app: ASGIApp, *, loop: str = "auto", http: str = "auto") -> uvicorn.Config:
    """uvicorn settings with the runtime's reloadable TLS context in place of uvicorn's own."""
    config = rt.config
    assert rt.tls is not None
    uv = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        ssl_certfile=str(config.tls_cert),
        ssl_keyfile=str(config.tls_key),
        log_level=config.log_level,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        loop=loop,
        http=http,
    )
    uv.load()
    # uvicorn hands config.ssl to the listener; ours is the one ReloadingTLS keeps re-loading.
    uv.ssl = rt.tls.context
    return uv


def serve(config: WebhookConfig) -> int:
    try:
        rt = build_runtime(config)
    except KubeError as exc:
        log.error("%s", exc)
        print(f"python -m webhook: error: {exc}", file=sys.stderr)
        return 2
    uv = uvicorn_config(rt, create_app(rt))
    log.info(
        "webhook on https://%s:%d policy=%s gate=%s validation=%s",
        config.host,
        config.port,
        config.mac_policy,
        config.sidecar_gate,
        config.validation,
    )
    uvicorn.Server(uv).run()
    return 0
