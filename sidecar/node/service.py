"""`python -m sidecar node-agent`: KubeVirt's NodeHookService on a unix socket, one per node.

grpclib on asyncio, as the sidecar's hook server (sidecar/pod/hook_server.py); each call's work runs
on a thread (libvirt is blocking) and is answered within the smaller of our --deadline and the
caller's own gRPC deadline, less a margin for the answer to travel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from typing import TYPE_CHECKING

from grpclib.server import Server

from sidecar.hookapi import node_hook_v1alpha1_grpc, node_hook_v1alpha1_pb2
from sidecar.node.agent import NodeAgent
from sidecar.node.macvtap_release import MacvtapReleaser
from sidecar.node.settings import NodeAgentSettings

if TYPE_CHECKING:
    from grpclib.server import Stream

log = logging.getLogger(__name__)

# Kept free at the end of the caller's deadline for our answer to reach it.
ANSWER_MARGIN_S = 1.0


class NodeHookService(node_hook_v1alpha1_grpc.NodeHookServiceBase):
    def __init__(self, agent: NodeAgent) -> None:
        self._agent = agent

    def budget(self, time_remaining: float | None) -> float:
        ours = self._agent.settings.deadline
        if time_remaining is None:
            return ours
        return max(0.0, min(ours, time_remaining - ANSWER_MARGIN_S))

    async def ExecuteNodeHook(  # noqa: N802 - gRPC method name
        self,
        stream: Stream[node_hook_v1alpha1_pb2.ExecuteNodeHookRequest, node_hook_v1alpha1_pb2.ExecuteNodeHookResponse],
    ) -> None:
        request = await stream.recv_message()
        assert request is not None  # grpclib answers a unary call without a message itself
        remaining = stream.deadline.time_remaining() if stream.deadline is not None else None
        outcome = await asyncio.to_thread(
            self._agent.handle,
            hook_point=request.hookPoint,
            raw_vmi=request.vmi,
            node_name=request.node_context.node_name,
            budget=self.budget(remaining),
        )
        # Always OK: a failed fixup must not fail the hook (with failureStrategy Fail that would
        # hold the migration). The outcome rides along as trailing metadata for people and tests.
        await stream.send_message(node_hook_v1alpha1_pb2.ExecuteNodeHookResponse())
        await stream.send_trailing_metadata(metadata=outcome.metadata())


async def _serve(settings: NodeAgentSettings) -> int:
    agent = NodeAgent(settings)
    path = settings.socket
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            path.unlink()  # a stale socket from a previous run of this agent
    except OSError as exc:
        log.error("cannot prepare %s: %s", path, exc)
        return 1
    # Signals first: whoever sees the socket may stop the agent at once, and a SIGTERM before the
    # handler is in place would kill it without removing the socket (exit -15, not 0).
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = Server([NodeHookService(agent)])
    await server.start(path=str(path))
    # Only virt-handler (root) and this agent's user need the socket.
    os.chmod(path, 0o600)
    log.info(
        "NodeHookService on %s; launchers' libvirt under %s; deadline %.1f s",
        path,
        settings.kubelet_pods_dir,
        settings.deadline,
    )
    # Issue 27, on the source node: off unless asked for (it needs more privileges than the hook).
    releaser = MacvtapReleaser(settings) if settings.release_stale_macvtap else None
    if releaser is not None:
        releaser.start()
    await stop.wait()
    log.info("stopping")
    if releaser is not None:
        await asyncio.to_thread(releaser.stop)
    server.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(server.wait_closed(), settings.deadline)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    if not await asyncio.to_thread(agent.wait_idle, settings.fixer.detach_timeout_s + 10):
        log.error("stopping while a fixup is still running")
    return 0


def serve_node_agent(settings: NodeAgentSettings) -> int:
    return asyncio.run(_serve(settings))
