"""The KubeVirt hook server: gRPC on a unix socket in the hook directory.

virt-launcher lists the hook directory, calls `Info` on every socket it finds, and refuses
to start the VM until each requested sidecar has answered. We subscribe to OnDefineDomain
(to learn the VMI: which NICs are bridge/macvtap and their policy; the domain XML goes back
unchanged), PreCloudInitIso (passed through) and, for v1alpha3, Shutdown (answer, then
exit so the pod can terminate).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc

from sidecar.hookapi import (
    hook_info_pb2,
    hook_info_pb2_grpc,
    hook_v1alpha2_pb2,
    hook_v1alpha2_pb2_grpc,
    hook_v1alpha3_pb2,
    hook_v1alpha3_pb2_grpc,
)
from sidecar.vmistore import VmiStore

log = logging.getLogger(__name__)

HOOK_NAME = "bridge-migration"
SOCKET_NAME = "bridge-migration.sock"
HOOK_POINTS = ("OnDefineDomain", "PreCloudInitIso", "Shutdown")
VERSIONS = ("v1alpha2", "v1alpha3")


class InfoService(hook_info_pb2_grpc.InfoServicer):
    def __init__(self, store: VmiStore) -> None:
        self._store = store

    def Info(  # noqa: N802 - gRPC method name
        self, request: hook_info_pb2.InfoParams, context: grpc.ServicerContext
    ) -> hook_info_pb2.InfoResult:
        self._store.registered.set()
        return hook_info_pb2.InfoResult(
            name=HOOK_NAME,
            versions=list(VERSIONS),
            hookPoints=[hook_info_pb2.HookPoint(name=n, priority=0) for n in HOOK_POINTS],
        )


class CallbacksV1alpha2(hook_v1alpha2_pb2_grpc.CallbacksServicer):
    def __init__(self, store: VmiStore) -> None:
        self._store = store

    def OnDefineDomain(  # noqa: N802
        self, request: hook_v1alpha2_pb2.OnDefineDomainParams, context: grpc.ServicerContext
    ) -> hook_v1alpha2_pb2.OnDefineDomainResult:
        self._store.offer(request.vmi)
        return hook_v1alpha2_pb2.OnDefineDomainResult(domainXML=request.domainXML)

    def PreCloudInitIso(  # noqa: N802
        self, request: hook_v1alpha2_pb2.PreCloudInitIsoParams, context: grpc.ServicerContext
    ) -> hook_v1alpha2_pb2.PreCloudInitIsoResult:
        self._store.offer(request.vmi)
        return hook_v1alpha2_pb2.PreCloudInitIsoResult(
            cloudInitNoCloudSource=request.cloudInitNoCloudSource, cloudInitData=request.cloudInitData
        )


class CallbacksV1alpha3(hook_v1alpha3_pb2_grpc.CallbacksServicer):
    def __init__(self, store: VmiStore, on_shutdown: Callable[[], None]) -> None:
        self._store = store
        self._on_shutdown = on_shutdown

    def OnDefineDomain(  # noqa: N802
        self, request: hook_v1alpha3_pb2.OnDefineDomainParams, context: grpc.ServicerContext
    ) -> hook_v1alpha3_pb2.OnDefineDomainResult:
        self._store.offer(request.vmi)
        return hook_v1alpha3_pb2.OnDefineDomainResult(domainXML=request.domainXML)

    def PreCloudInitIso(  # noqa: N802
        self, request: hook_v1alpha3_pb2.PreCloudInitIsoParams, context: grpc.ServicerContext
    ) -> hook_v1alpha3_pb2.PreCloudInitIsoResult:
        self._store.offer(request.vmi)
        return hook_v1alpha3_pb2.PreCloudInitIsoResult(
            cloudInitNoCloudSource=request.cloudInitNoCloudSource, cloudInitData=request.cloudInitData
        )

    def Shutdown(  # noqa: N802
        self, request: hook_v1alpha3_pb2.ShutdownParams, context: grpc.ServicerContext
    ) -> hook_v1alpha3_pb2.ShutdownResult:
        # Answer first; the stop runs once this RPC has returned (see HookServer).
        context.add_callback(self._on_shutdown)
        return hook_v1alpha3_pb2.ShutdownResult()


class HookServer:
    """gRPC server on `<dir>/bridge-migration.sock`; off when the directory does not exist.

    This module is imported only when the hook directory exists: grpc costs ~20 MiB of RSS.
    """

    def __init__(self, *, directory: Path, store: VmiStore, on_shutdown: Callable[[], None]) -> None:
        self.directory = directory
        self.socket_path = directory / SOCKET_NAME
        self._store = store
        self._on_shutdown = on_shutdown
        self._server: grpc.Server | None = None

    @property
    def enabled(self) -> bool:
        return self._server is not None

    def start(self) -> bool:
        if not self.directory.is_dir():
            log.info("hook directory %s does not exist: hook server off", self.directory)
            return False
        if self.socket_path.exists() or self.socket_path.is_symlink():
            self.socket_path.unlink()  # a stale socket from a previous run of this container
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="hook"))
        hook_info_pb2_grpc.add_InfoServicer_to_server(InfoService(self._store), server)
        hook_v1alpha2_pb2_grpc.add_CallbacksServicer_to_server(CallbacksV1alpha2(self._store), server)
        hook_v1alpha3_pb2_grpc.add_CallbacksServicer_to_server(
            CallbacksV1alpha3(self._store, self._on_shutdown), server
        )
        server.add_insecure_port(f"unix://{self.socket_path}")
        server.start()
        os.chmod(self.socket_path, 0o660)
        self._server = server
        log.info("hook server listening on %s", self.socket_path)
        return True

    def stop(self, grace: float = 1.0) -> None:
        if self._server is not None:
            self._server.stop(grace).wait(grace + 1)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
