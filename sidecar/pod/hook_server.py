"""The KubeVirt hook server: gRPC on a unix socket in the hook directory.

virt-launcher lists the hook directory, calls `Info` on every socket it finds, and refuses
to start the VM until each requested sidecar has answered. Hook points we list, and why:
- OnDefineDomain: to learn the VMI (which NICs are bridge/macvtap, their policy); the domain
  XML goes back unchanged.
- Shutdown (v1alpha3): answer, then exit, so the pod can terminate.
PreCloudInitIso is never listed: for a VMI without a cloud-init volume virt-launcher hands the
hook manager nil cloud-init data, which it dereferences once any sidecar subscribed, and the
VM (and every incoming migration of it) fails to start (docs/kubevirt-facts.md).

grpclib (asyncio, pure Python over h2) rather than grpcio: grpcio's import alone is ~20 MiB of
RSS in a container capped at 64M; grpclib with the protobuf messages is ~5 MiB. The server runs
its own event loop on one thread, so the rest of the sidecar stays thread-based.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from grpclib.server import Server

from sidecar.core.vmistore import VmiStore
from sidecar.hookapi import (
    hook_info_grpc,
    hook_info_pb2,
    hook_v1alpha2_grpc,
    hook_v1alpha2_pb2,
    hook_v1alpha3_grpc,
    hook_v1alpha3_pb2,
)

if TYPE_CHECKING:
    from grpclib.server import Stream

log = logging.getLogger(__name__)

HOOK_NAME = "bridge-migration"
SOCKET_NAME = "bridge-migration.sock"
HOOK_POINTS = ("OnDefineDomain", "Shutdown")
VERSIONS = ("v1alpha2", "v1alpha3")


class InfoService(hook_info_grpc.InfoBase):
    def __init__(self, store: VmiStore) -> None:
        self._store = store

    async def Info(  # noqa: N802 - gRPC method name
        self, stream: Stream[hook_info_pb2.InfoParams, hook_info_pb2.InfoResult]
    ) -> None:
        await stream.recv_message()
        self._store.registered.set()
        await stream.send_message(
            hook_info_pb2.InfoResult(
                name=HOOK_NAME,
                versions=list(VERSIONS),
                hookPoints=[hook_info_pb2.HookPoint(name=n, priority=0) for n in HOOK_POINTS],
            )
        )


class CallbacksV1alpha2(hook_v1alpha2_grpc.CallbacksBase):
    def __init__(self, store: VmiStore) -> None:
        self._store = store

    async def OnDefineDomain(  # noqa: N802
        self, stream: Stream[hook_v1alpha2_pb2.OnDefineDomainParams, hook_v1alpha2_pb2.OnDefineDomainResult]
    ) -> None:
        request = await stream.recv_message()
        assert request is not None  # grpclib answers a unary call without a message itself
        self._store.offer(request.vmi)
        await stream.send_message(hook_v1alpha2_pb2.OnDefineDomainResult(domainXML=request.domainXML))


class CallbacksV1alpha3(hook_v1alpha3_grpc.CallbacksBase):
    def __init__(self, store: VmiStore, on_shutdown: Callable[[], None]) -> None:
        self._store = store
        self._on_shutdown = on_shutdown

    async def OnDefineDomain(  # noqa: N802
        self, stream: Stream[hook_v1alpha3_pb2.OnDefineDomainParams, hook_v1alpha3_pb2.OnDefineDomainResult]
    ) -> None:
        request = await stream.recv_message()
        assert request is not None
        self._store.offer(request.vmi)
        await stream.send_message(hook_v1alpha3_pb2.OnDefineDomainResult(domainXML=request.domainXML))

    async def Shutdown(  # noqa: N802
        self, stream: Stream[hook_v1alpha3_pb2.ShutdownParams, hook_v1alpha3_pb2.ShutdownResult]
    ) -> None:
        await stream.recv_message()
        await stream.send_message(hook_v1alpha3_pb2.ShutdownResult())
        # Answered: the stop runs on another thread and waits for this call to end (see stop()).
        self._on_shutdown()


class HookServer:
    """gRPC server on `<dir>/bridge-migration.sock`; off when the directory does not exist.

    This module is imported only when the hook directory exists.
    """

    def __init__(self, *, directory: Path, store: VmiStore, on_shutdown: Callable[[], None]) -> None:
        self.directory = directory
        self.socket_path = directory / SOCKET_NAME
        self._store = store
        self._on_shutdown = on_shutdown
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self._server is not None

    def start(self) -> bool:
        if not self.directory.is_dir():
            log.info("hook directory %s does not exist: hook server off", self.directory)
            return False
        if self.socket_path.exists() or self.socket_path.is_symlink():
            self.socket_path.unlink()  # a stale socket from a previous run of this container
        loop = asyncio.new_event_loop()

        async def listen() -> Server:
            # Made inside the loop that will run it: grpclib binds its server to the running loop.
            server = Server(
                [
                    InfoService(self._store),
                    CallbacksV1alpha2(self._store),
                    CallbacksV1alpha3(self._store, self._on_shutdown),
                ]
            )
            await server.start(path=str(self.socket_path))
            return server

        try:
            server = loop.run_until_complete(listen())
        except BaseException:
            loop.close()
            raise
        os.chmod(self.socket_path, 0o660)
        self._loop, self._server = loop, server
        self._thread = threading.Thread(target=loop.run_forever, name="hook-server", daemon=True)
        self._thread.start()
        log.info("hook server listening on %s", self.socket_path)
        return True

    def stop(self, grace: float = 1.0) -> None:
        loop, server, thread = self._loop, self._server, self._thread
        self._loop = self._server = self._thread = None
        if loop is not None and server is not None and thread is not None:

            async def close() -> None:
                server.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(server.wait_closed(), grace)

            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(close(), loop).result(grace + 1)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(grace + 1)
            if not thread.is_alive():
                loop.close()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
