"""The lab's stand-in for virt-handler's node hook call (KubeVirt v1.9 Plugin API).

What virt-handler does on the target node in ``finalizeMigration`` (docs/kubevirt-facts.md
P4-P6), with grpcio as an independent client of our grpclib server: dial the plugin's unix
socket, blocking, for at most 2 s; call ``ExecuteNodeHook`` with the hook point's name, the VMI
as JSON and the node name, under the hook's timeout (30 s when unset); then apply the hook's
``failureStrategy``: ``Ignore`` logs the error and goes on, ``Fail`` returns it (the migration
then does not complete on this pass). The lab marks its migration completed right after this
returns, so a slow or broken agent shows as a late "completed", never as a stuck one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import grpc

from sidecar.hookapi import node_hook_v1alpha1_pb2, node_hook_v1alpha1_pb2_grpc

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S: Final = 30.0  # DefaultTimeout in pkg/hooks/plugins/v1alpha1/client.go
CONNECT_TIMEOUT_S: Final = 2.0  # CONNECT_TIMEOUT_SECONDS in pkg/util/net/grpc/grpc.go
FailureStrategy = Literal["Fail", "Ignore"]


@dataclass
class HookCall:
    """One node hook call as virt-handler made it, and what came of it."""

    hook_point: str
    started: float  # epoch seconds
    finished: float
    code: str  # gRPC status code name: OK, DEADLINE_EXCEEDED, UNAVAILABLE, ...
    error: str | None
    trailers: dict[str, str] = field(default_factory=dict)
    # What CallNodeHooks returns: None (go on) or the error that fails this finalize pass.
    returned_error: str | None = None

    @property
    def seconds(self) -> float:
        return self.finished - self.started

    @property
    def result(self) -> str | None:
        """The agent's own account (trailing metadata), when it answered."""
        return self.trailers.get("bridge-migration-result")


def call_node_hook(
    socket: Path,
    *,
    vmi: Mapping[str, Any],
    node_name: str,
    hook_point: str = "PostMigrationTarget",
    timeout: float = DEFAULT_TIMEOUT_S,
    failure_strategy: FailureStrategy = "Ignore",
) -> HookCall:
    """Call the agent at ``socket`` as virt-handler would; never raises for a hook failure."""
    started = time.time()
    request = node_hook_v1alpha1_pb2.ExecuteNodeHookRequest(
        hookPoint=hook_point,
        vmi=json.dumps(vmi).encode(),
        node_context=node_hook_v1alpha1_pb2.NodeContext(node_name=node_name),
    )
    code, error, trailers = "OK", None, {}
    with grpc.insecure_channel(f"unix://{socket}") as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT_S)
        except grpc.FutureTimeoutError:
            code, error = "UNAVAILABLE", f"failed to dial plugin at {socket}"
        else:
            stub = node_hook_v1alpha1_pb2_grpc.NodeHookServiceStub(channel)
            try:
                _response, rpc = stub.ExecuteNodeHook.with_call(request, timeout=timeout)
                trailers = {k: v for k, v in rpc.trailing_metadata() or () if isinstance(v, str)}
            except grpc.RpcError as exc:
                code = exc.code().name if exc.code() else "UNKNOWN"
                error = f"node hook {hook_point} failed with {code}: {exc.details()}"
    finished = time.time()
    call = HookCall(hook_point, started, finished, code, error, trailers)
    if error is not None:
        if failure_strategy == "Ignore":
            log.warning("node hook %s failed (ignored): %s", hook_point, error)
        else:
            call.returned_error = error
    return call
