"""What the node agent's tests share: the VMI virt-handler sends, and a launcher socket that never answers."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from sidecar.node.fixup import reachable_socket

NODE = "node-b"
TARGET_UID = "6f1c2a9e-3b7d-4c55-9a0e-1d2f3a4b5c6d"
SOURCE_UID = "0b9e8d7c-6a5f-4e3d-8c2b-1a0f9e8d7c6b"


def vmi_json(*, target_uid: str = TARGET_UID, node: str = NODE, bridge: bool = True) -> dict[str, Any]:
    """The parts of a v1.9 VMI virt-handler sends in finalizeMigration that the agent reads."""
    binding: dict[str, Any] = {"bridge": {}} if bridge else {"masquerade": {}}
    return {
        "metadata": {"name": "client", "namespace": "default", "annotations": {}},
        "spec": {
            "domain": {"devices": {"interfaces": [{"name": "default", **binding}]}},
            "networks": [{"name": "default", "pod": {}}],
        },
        "status": {
            "nodeName": node,
            "activePods": {SOURCE_UID: "node-a", target_uid: node},
            "migrationState": {
                "migrationUid": "1e2d3c4b-0000-4000-8000-000000000001",
                "targetNode": node,
                "targetPod": "virt-launcher-client-abcde",
                "sourceNode": "node-a",
            },
        },
    }


def listening_socket(path: Path) -> socket.socket:
    """A unix socket that accepts connections and never says anything: a launcher whose libvirt
    hangs. (A real stand-in: the kernel queues the connection, nothing answers.)"""
    path.parent.mkdir(parents=True, exist_ok=True)
    with reachable_socket(path) as short:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(short)
    sock.listen(8)
    return sock
