"""The node agent's pure half: from the VMI virt-handler sends to the target launcher pod on this node."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from sidecar.node.fixup import reachable_socket
from sidecar.node.target import SOCKET_IN_POD, HookError, NotForUs, locate_target
from tests.sidecar.node.launchers import NODE, TARGET_UID, listening_socket, vmi_json


def test_the_target_is_the_active_pod_on_this_node_with_a_libvirt_socket(tmp_path: Path) -> None:
    pods = tmp_path / "pods"
    sock = listening_socket(pods / TARGET_UID / SOCKET_IN_POD)
    try:
        target = locate_target(vmi_json(), node_name=NODE, kubelet_pods=pods)
    finally:
        sock.close()
    assert (target.pod_uid, target.domain, target.interfaces) == (TARGET_UID, "default_client", ("default",))
    assert target.migration_uid == "1e2d3c4b-0000-4000-8000-000000000001"
    assert target.socket == pods / TARGET_UID / SOCKET_IN_POD


def test_a_migration_to_another_node_and_a_vmi_without_migration_are_refused(tmp_path: Path) -> None:
    with pytest.raises(NotForUs, match="migrates to node node-b"):
        locate_target(vmi_json(), node_name="node-x", kubelet_pods=tmp_path)
    no_migration = vmi_json()
    del no_migration["status"]["migrationState"]
    with pytest.raises(HookError, match="migrationState"):
        locate_target(no_migration, node_name=NODE, kubelet_pods=tmp_path)
    sneaky = vmi_json(target_uid="../../etc")
    with pytest.raises(HookError, match="not a plain name"):
        locate_target(sneaky, node_name=NODE, kubelet_pods=tmp_path)


def test_a_socket_path_longer_than_sun_path_is_reached_through_proc_self_fd(tmp_path: Path) -> None:
    # The real layout under /var/lib/kubelet/pods is 121 characters: too long to connect to.
    deep = tmp_path / ("d" * 60) / TARGET_UID / SOCKET_IN_POD
    assert len(str(deep)) > 108
    server = listening_socket(deep)
    try:
        with reachable_socket(deep) as short:
            assert short.startswith("/proc/self/fd/")
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(short)
            client.close()
    finally:
        server.close()


def test_the_hold_counts_from_the_migrations_end_rounded_up_never_after_the_call(tmp_path: Path) -> None:
    # virt-handler sends endTimestamp in whole seconds (facts P12): 12:00:05Z is any moment up to
    # 12:00:06, so the guest resumed by then; a call can never come before the resume.
    pods = tmp_path / "pods"
    ended = vmi_json()
    ended["status"]["migrationState"]["endTimestamp"] = "2026-12-06T12:00:05Z"
    sock = listening_socket(pods / TARGET_UID / SOCKET_IN_POD)
    try:
        target = locate_target(ended, node_name=NODE, kubelet_pods=pods)
        unstamped = locate_target(vmi_json(), node_name=NODE, kubelet_pods=pods)
    finally:
        sock.close()
    stamp = 1796558405.0  # 2026-12-06T12:00:05Z
    assert target.resumed_at(called_at=stamp + 30) == stamp + 1
    assert target.resumed_at(called_at=stamp + 0.5) == stamp + 0.5
    assert unstamped.resumed_at(called_at=stamp + 30) == stamp + 30
