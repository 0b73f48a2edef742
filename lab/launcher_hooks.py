"""The lab playing virt-launcher's side of the KubeVirt hook protocol against our sidecar.

virt-launcher finds each hook sidecar's socket in its hooks directory (polling every
300 ms), asks ``Info`` which versions and hook points it serves, calls ``OnDefineDomain``
with the domain XML and the VMI before defining the domain, and calls ``Shutdown`` when the
pod goes away. The lab does the same, so the sidecar learns the VMI the way it would in a
real pod. The messages are the sidecar's generated ones (sidecar/hookapi): the wire facts
they encode were checked against KubeVirt by the sidecar's author.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc

from sidecar.hookapi import hook_info_pb2, hook_info_pb2_grpc, hook_v1alpha3_pb2, hook_v1alpha3_pb2_grpc

HOOK_VERSION = "v1alpha3"
RPC_TIMEOUT = 30.0


def find_hook_socket(directory: Path, *, timeout: float = 60.0) -> Path:
    """The first ``*.sock`` in ``directory``, polled every 300 ms as virt-launcher does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(p for p in directory.glob("*.sock") if p.is_socket())
        if found:
            return found[0]
        time.sleep(0.3)
    raise TimeoutError(f"no hook socket appeared in {directory} within {timeout:.0f} s")


class LauncherHooks:
    """A hook client for one sidecar socket."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self._channel = grpc.insecure_channel(f"unix://{socket}")

    def info(self) -> hook_info_pb2.InfoResult:
        stub = hook_info_pb2_grpc.InfoStub(self._channel)
        result: hook_info_pb2.InfoResult = stub.Info(hook_info_pb2.InfoParams(), timeout=RPC_TIMEOUT)
        return result

    def on_define_domain(self, domain_xml: str, vmi: Mapping[str, Any]) -> str:
        stub = hook_v1alpha3_pb2_grpc.CallbacksStub(self._channel)
        params = hook_v1alpha3_pb2.OnDefineDomainParams(domainXML=domain_xml.encode(), vmi=json.dumps(vmi).encode())
        result: hook_v1alpha3_pb2.OnDefineDomainResult = stub.OnDefineDomain(params, timeout=RPC_TIMEOUT)
        return result.domainXML.decode()

    def shutdown(self) -> None:
        stub = hook_v1alpha3_pb2_grpc.CallbacksStub(self._channel)
        stub.Shutdown(hook_v1alpha3_pb2.ShutdownParams(), timeout=RPC_TIMEOUT)

    def close(self) -> None:
        self._channel.close()


def define_domain_through_hooks(directory: Path, domain_xml: str, vmi: Mapping[str, Any]) -> tuple[str, LauncherHooks]:
    """Info, then OnDefineDomain when the sidecar offers it; returns the XML to define."""
    hooks = LauncherHooks(find_hook_socket(directory))
    info = hooks.info()
    points = {p.name for p in info.hookPoints}
    if HOOK_VERSION not in info.versions or "OnDefineDomain" not in points:
        raise RuntimeError(f"sidecar hook {info.name!r} offers {list(info.versions)} / {sorted(points)}")
    return hooks.on_define_domain(domain_xml, vmi), hooks
