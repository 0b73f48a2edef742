"""Running the app under uvicorn with our own reloadable TLS context."""

from __future__ import annotations

import errno
import logging
import socket
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
        # No logging set-up of uvicorn's own: its loggers reach the root handler (cli.main), so
        # its lines are written in --log-format like ours. No access log: each review has its
        # decision line (webhook/decision_log.py), and the probes would drown them.
        log_config=None,
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


# The default host: IPv6's any address, which takes IPv4 too (as v4-mapped) once IPV6_V6ONLY is off.
ANY_IPV6 = "::"
ANY_IPV4 = "0.0.0.0"
# A kernel without IPv6 (ipv6.disable=1) refuses the socket; one with IPv6 switched off may refuse the bind.
_NO_IPV6 = (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT)


def _bound(family: socket.AddressFamily, address: tuple[str, int], *, dual_stack: bool = False) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if dual_stack:
            # asyncio would set IPV6_V6ONLY on an AF_INET6 socket it makes itself (uvicorn's host
            # path): this is why the webhook makes its socket and hands it over.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def listen_socket(host: str, port: int) -> socket.socket:
    """The socket the webhook serves on, bound to ``host``:``port`` (uvicorn listens on it).

    ``::`` (the default) is dual-stack: IPv6 and, with ``IPV6_V6ONLY`` off, IPv4, so one address serves
    IPv4, IPv6-only and dual-stack clusters alike. Where the kernel has no IPv6 it is ``0.0.0.0``,
    said in the log. Any other host is bound as given (an IPv4 address serves IPv4 only)."""
    if host == ANY_IPV6:
        try:
            return _bound(socket.AF_INET6, (ANY_IPV6, port), dual_stack=True)
        except OSError as exc:
            if exc.errno not in _NO_IPV6:
                raise
            log.warning("no IPv6 on this host (%s): listening on %s, IPv4 only", exc, ANY_IPV4)
            return _bound(socket.AF_INET, (ANY_IPV4, port))
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    return _bound(family, (str(address[0]), int(address[1])))


def serve(config: WebhookConfig) -> int:
    try:
        rt = build_runtime(config)
    except KubeError as exc:
        log.error("%s", exc)
        print(f"python -m webhook: error: {exc}", file=sys.stderr)
        return 2
    try:
        sock = listen_socket(config.host, config.port)
    except OSError as exc:
        print(f"python -m webhook: error: cannot listen on {config.host} port {config.port}: {exc}", file=sys.stderr)
        return 2
    uv = uvicorn_config(rt, create_app(rt))
    log.info(
        "webhook on %s port %d policy=%s gate=%s validation=%s",
        sock.getsockname()[0],
        config.port,
        config.mac_policy,
        config.sidecar_gate,
        config.validation,
    )
    with sock:
        uvicorn.Server(uv).run(sockets=[sock])
    return 0
