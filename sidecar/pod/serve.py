"""`serve`: start the sidecar's parts, serve REST on an asyncio loop, stop cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading

from sidecar.pod.rest import create_server
from sidecar.pod.settings import ServeSettings
from sidecar.pod.wiring import Sidecar

log = logging.getLogger(__name__)


def serve(settings: ServeSettings) -> int:
    sidecar = Sidecar(settings)
    # The hook socket and the libvirt watcher first: virt-launcher may be waiting for Info.
    sidecar.start()
    try:
        return asyncio.run(_serve_rest(sidecar, settings))
    finally:
        # After the loop: a running fixup is allowed to finish (see Sidecar.stop).
        sidecar.stop()


async def _serve_rest(sidecar: Sidecar, settings: ServeSettings) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    server = create_server(sidecar, token=settings.token)
    try:
        await server.start(settings.listen_host, settings.listen_port)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", settings.listen_host, settings.listen_port, exc)
        return 1
    log.info(
        "REST API on %s:%d (%s)",
        settings.listen_host,
        settings.listen_port,
        "bearer token required on all but /healthz" if settings.token else "no token: loopback only",
    )

    def stop_serving(why: str) -> None:
        if not stop.is_set():
            log.info("%s: stopping", why)
            stop.set()

    def on_hook_shutdown() -> None:
        sidecar.shutdown_requested.wait()
        loop.call_soon_threadsafe(stop_serving, sidecar.shutdown_reason)

    threading.Thread(target=on_hook_shutdown, name="hook-shutdown", daemon=True).start()
    # A pod being deleted is not a failure: stop the parts and exit 0.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_serving, signal.Signals(signum).name)
    await stop.wait()
    await server.close()
    return 0
