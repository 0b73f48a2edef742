"""`serve`: start the sidecar's parts, run uvicorn in the foreground, stop cleanly."""

from __future__ import annotations

import logging
import signal
import threading

from sidecar.config import ServeSettings
from sidecar.service import Sidecar

log = logging.getLogger(__name__)


def serve(settings: ServeSettings) -> int:
    sidecar = Sidecar(settings)
    # The hook socket and the libvirt watcher first: virt-launcher may be waiting for Info,
    # and FastAPI + uvicorn take most of the start-up time to import.
    sidecar.start()
    import uvicorn

    from sidecar.rest import create_app

    config = uvicorn.Config(
        create_app(sidecar, token=settings.token),
        host=settings.listen_host,
        port=settings.listen_port,
        log_level=settings.log_level.lower(),
        access_log=False,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    log.info(
        "REST API on %s:%d (%s)",
        settings.listen_host,
        settings.listen_port,
        "bearer token required on all but /healthz" if settings.token else "no token: loopback only",
    )

    def on_shutdown() -> None:
        sidecar.shutdown_requested.wait()
        log.info("Shutdown called through the hook: stopping")
        server.should_exit = True

    threading.Thread(target=on_shutdown, name="hook-shutdown", daemon=True).start()
    # uvicorn handles SIGTERM/SIGINT while it runs and re-raises them after its graceful stop;
    # with these no-op handlers in place that re-raise lands here, and the process still
    # stops its other parts and exits 0 (a pod being deleted is not a failure).
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: None)
    try:
        server.run()
    finally:
        sidecar.stop()
    return 0
