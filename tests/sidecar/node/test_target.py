"""The node agent's pure half: from the VMI virt-handler sends to the target launcher pod on this node."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sidecar.node.fixup import reachable_socket
from sidecar.node.target import SOCKET_IN_POD, HookError, NotForUs, Outcome, locate_target, parse_vmi
from tests.sidecar.node.launchers import NODE, SOURCE_UID, TARGET_UID, listening_socket, vmi_json


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


# Found by mutation testing (docs/testing.md, "Mutation testing"): what virt-handler's log shows
# of the agent's answer, and the VMIs the agent must refuse with a reason rather than act on.


@contextlib.contextmanager
def launchers(pods: Path, *uids: str) -> Iterator[None]:
    """A listening libvirt socket in each named pod's directory, as a running launcher has."""
    with contextlib.ExitStack() as stack:
        for uid in uids:
            stack.enter_context(listening_socket(pods / uid / SOCKET_IN_POD))
        yield


def test_the_vmi_virt_handler_sends_is_read_as_a_json_object_or_refused_with_why() -> None:
    assert parse_vmi(json.dumps(vmi_json()).encode()) == vmi_json()
    with pytest.raises(HookError, match=r"^the VMI is not JSON: "):
        parse_vmi(b"\xff{")
    with pytest.raises(HookError, match=r"^the VMI is not JSON: "):
        parse_vmi(b"{")
    with pytest.raises(HookError, match=r"^the VMI is not a JSON object$"):
        parse_vmi(b"[1]")


def test_the_answers_trailing_metadata_is_one_ascii_line_of_at_most_1000_characters() -> None:
    long = Outcome("failed", "cannot reach\n  the launcher:\tl\u00e4uft nicht " + "x" * 2000, migration_uid="uid-1")
    meta = long.metadata()
    assert set(meta) == {"bridge-migration-result", "bridge-migration-message", "bridge-migration-migration-uid"}
    assert meta["bridge-migration-result"] == "failed"
    assert meta["bridge-migration-message"].startswith("cannot reach the launcher: l?uft nicht xxx")
    assert len(meta["bridge-migration-message"]) == 1000
    assert meta["bridge-migration-migration-uid"] == "uid-1"
    assert Outcome("noop", "nothing of ours").metadata() == {
        "bridge-migration-result": "noop",
        "bridge-migration-message": "nothing of ours",
    }


def test_the_target_pod_names_the_vmi_and_the_launcher_pod_as_the_migration_state_does(tmp_path: Path) -> None:
    pods = tmp_path / "pods"
    unnamed, odd = vmi_json(), vmi_json()
    del unnamed["status"]["migrationState"]["targetPod"]
    odd["status"]["migrationState"]["targetPod"] = 5
    with launchers(pods, TARGET_UID):
        target = locate_target(vmi_json(), node_name=NODE, kubelet_pods=pods)
        assert locate_target(unnamed, node_name=NODE, kubelet_pods=pods).pod_name is None
        assert locate_target(odd, node_name=NODE, kubelet_pods=pods).pod_name is None
    assert (target.namespace, target.name, target.pod_name) == ("default", "client", "virt-launcher-client-abcde")


@pytest.mark.parametrize(
    ("stamp", "ended_by"),
    [
        ("2026-12-06T12:00:05.250000Z", 1796558405.25),  # already precise: not rounded up
        ("2026-12-06T12:00:05+00:00", 1796558406.0),
        (1796558405, None),  # not a timestamp: the hold counts from the call
        ("2026-12-06T12:00:05", None),  # no zone: cannot tell when
        ("yesterday", None),
    ],
)
def test_the_migrations_end_is_read_only_from_a_zoned_rfc3339_time(
    tmp_path: Path, stamp: object, ended_by: float | None
) -> None:
    ended = vmi_json()
    ended["status"]["migrationState"]["endTimestamp"] = stamp
    with launchers(tmp_path, TARGET_UID):
        assert locate_target(ended, node_name=NODE, kubelet_pods=tmp_path).ended_by == ended_by


def without(path: str, value: object = None) -> dict[str, Any]:
    """vmi_json() with the field at a dotted path removed, or set to value when one is given."""
    vmi = vmi_json()
    *parents, last = path.split(".")
    node: Any = vmi
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return vmi


@pytest.mark.parametrize(
    ("vmi", "error", "says"),
    [
        (without("metadata.name"), HookError, "^the VMI has no metadata.name or metadata.namespace$"),
        (without("metadata.name", ""), HookError, "^the VMI has no metadata.name or metadata.namespace$"),
        (without("metadata.name", 5), HookError, "^the VMI has no metadata.name or metadata.namespace$"),
        (without("metadata.namespace", ""), HookError, "^the VMI has no metadata.name or metadata.namespace$"),
        (without("spec"), NotForUs, "^default/client has no bridge or macvtap interface we look after$"),
        (vmi_json(bridge=False), NotForUs, "^default/client has no bridge or macvtap interface we look after$"),
        (without("status", "garbage"), HookError, "^default/client has no status.migrationState$"),
        (without("status.migrationState.migrationUid", 5), HookError, "migrationState.migrationUid is missing$"),
        (without("status.activePods"), HookError, "^default/client has no status.activePods$"),
        (vmi_json(target_uid="."), HookError, "a pod UID in status.activePods is not a plain name$"),
        (vmi_json(target_uid=".."), HookError, "a pod UID in status.activePods is not a plain name$"),
    ],
)
def test_a_vmi_that_does_not_say_enough_is_refused_with_the_reason(
    tmp_path: Path, vmi: dict[str, Any], error: type[Exception], says: str
) -> None:
    with launchers(tmp_path, TARGET_UID), pytest.raises(error, match=says):
        locate_target(vmi, node_name=NODE, kubelet_pods=tmp_path)


def test_without_exactly_one_launcher_socket_here_the_error_lists_this_nodes_pods_only(tmp_path: Path) -> None:
    with pytest.raises(HookError) as none_here:
        locate_target(vmi_json(), node_name=NODE, kubelet_pods=tmp_path)
    assert str(none_here.value) == (
        f"default/client: no launcher pod of status.activePods on {NODE} has a libvirt socket"
        f" under {tmp_path} (pods here: {TARGET_UID})"
    )
    only_source = without("status.activePods", {SOURCE_UID: "node-a"})
    with launchers(tmp_path / "a", SOURCE_UID), pytest.raises(HookError, match=r"\(pods here: none\)$"):
        locate_target(only_source, node_name=NODE, kubelet_pods=tmp_path / "a")
    two = without("status.activePods", {SOURCE_UID: NODE, TARGET_UID: NODE})
    first, second = sorted([SOURCE_UID, TARGET_UID])
    with launchers(tmp_path / "b", SOURCE_UID, TARGET_UID), pytest.raises(HookError) as several:
        locate_target(two, node_name=NODE, kubelet_pods=tmp_path / "b")
    assert str(several.value) == f"default/client: several launcher pods on {NODE}: {first}, {second}"
    with pytest.raises(HookError, match=rf"\(pods here: {first}, {second}\)$"):
        locate_target(two, node_name=NODE, kubelet_pods=tmp_path / "c")
