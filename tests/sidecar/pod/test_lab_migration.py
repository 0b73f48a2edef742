"""The sidecar process in a lab pod, end to end: a live migration lands, the sidecar fixes
the NIC on its own, and the guest gets the target pod's address.

Run the way the lab runs it: `ip netns exec <pod> python -m sidecar serve ...` with the
pod's own libvirtd, downward-API annotations file and hook directory.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import grpc
import libvirt
import pytest

from lab.cluster import Lab, Pod, Vm
from lab.events import EventLog
from lab.process import wait_for
from sidecar.hookapi import hook_info_pb2, hook_info_pb2_grpc, hook_v1alpha3_pb2, hook_v1alpha3_pb2_grpc
from sidecar.pod.hook_server import SOCKET_NAME
from tests.sidecar.guest import wait_guest_nic
from tests.sidecar.podview import metric, sidecar_log
from tests.sidecar.samples import vmi

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    # KubeVirt v1.5 to v1.8: the target's DHCP server answers the target pod's MAC, so
    # follow-pod reattaches (on v1.9+ it serves the status MAC and the NIC is only refreshed).
    with Lab(kubevirt_version="v1.8.0") as the_lab:
        the_lab.add_nodes("a", "b")
        yield the_lab


@pytest.fixture(scope="module")
def vm(lab: Lab) -> Vm:
    the_vm = lab.start_vm(name="follow", node="a", policy="follow-pod", sidecar=True)
    the_vm.console.wait("dhcp-ack", nic="eth0", timeout=180)
    return the_vm


def sidecar_of(pod: Pod) -> Any:
    assert pod.sidecar is not None
    return pod.sidecar


def automatic_fixup(pod: Pod, *, timeout: float = 120) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        records = [r for r in sidecar_of(pod).fixups() if r["trigger"] in ("resumed-migrated", "postcopy-completed")]
        return records[-1] if records else None

    wait_for(done, timeout=timeout, interval=0.5, what=f"automatic fixup in {pod.name}")
    record = done()
    assert record is not None
    return record


def test_status_maps_the_nic_to_the_pod_link_read_from_sysfs(vm: Vm) -> None:
    status = sidecar_of(vm.pod).status()
    assert status["domain"] == vm.domain_name
    assert status["domainState"] == "running"
    [iface] = [i for i in status["interfaces"] if i["alias"] == "ua-default"]
    assert (iface["podLink"], iface["podLinkMac"]) == ("eth0", vm.pod.cni_mac)
    assert iface["mac"] == vm.pod.cni_mac  # follow-pod: the guest started with the pod's MAC


def play_virt_launcher(pod: Pod) -> None:
    """What virt-launcher does with hook sidecars, also on a migration target while it
    prepares it: Info, then OnDefineDomain with the VMI (the domain XML comes back unchanged)."""
    socket = sidecar_of(pod).hook_dir / SOCKET_NAME
    with grpc.insecure_channel(f"unix://{socket}") as channel:
        hook_info_pb2_grpc.InfoStub(channel).Info(hook_info_pb2.InfoParams(), timeout=30)
        xml = b"<domain type='qemu'><name>x</name></domain>"
        result = hook_v1alpha3_pb2_grpc.CallbacksStub(channel).OnDefineDomain(
            hook_v1alpha3_pb2.OnDefineDomainParams(domainXML=xml, vmi=json.dumps(vmi()).encode()), timeout=30
        )
        assert result.domainXML == xml


def test_after_a_migration_the_sidecar_reattaches_with_the_target_pods_mac(
    lab: Lab, vm: Vm, monkeypatch: pytest.MonkeyPatch
) -> None:
    start_sidecar = lab.start_sidecar

    def start_sidecar_and_call_its_hooks(pod: Pod, **kwargs: Any) -> None:
        start_sidecar(pod, **kwargs)
        play_virt_launcher(pod)

    monkeypatch.setattr(lab, "start_sidecar", start_sidecar_and_call_its_hooks)
    since = time.time()
    lab.migrate(vm, to_node="b")
    monkeypatch.undo()
    target = vm.pod
    status = sidecar_of(target).status()
    assert (status["vmiKnown"], status["hookRegistered"]) == (True, True)
    assert sidecar_of(target).call("GET", "/healthz")[1]["ready"] is True
    assert target.node == "b"
    record = automatic_fixup(target)
    assert record["result"] == "unverified", record
    [iface] = record["interfaces"]
    assert (iface["action"], iface["result"], iface["newMac"]) == ("reattach", "done", target.cni_mac)
    for key in ("triggerTime", "started", "finished"):
        assert isinstance(record[key], float)
    assert record["triggerTime"] <= record["started"] <= record["finished"]
    assert record["eventToDoneMs"] > 0
    assert vm.domain_mac() == target.cni_mac
    wait_guest_nic(vm, mac=target.cni_mac, since=since)
    # The point of it all: the guest now holds the target pod's address.
    wait_for(
        lambda: (
            vm.guest_address() == f"{target.ip}/{target.net.prefix_len}"
            or (vm.guest_address() or "").startswith(target.ip)
        ),
        timeout=90,
        what="guest lease from the target pod",
    )
    # A second trigger for the same arrival is a no-op.
    status, body = sidecar_of(target).call("POST", "/v1/fixup", {})
    assert (status, body["result"]) == (200, "noop")


def restart_daemon(pod: Pod) -> None:
    """Stop the pod's libvirtd, see the sidecar notice, start it again, see it reconnect."""
    sidecar = sidecar_of(pod)
    mark = len(sidecar_log(pod))
    if pod.events is not None:
        pod.events.close()
    with contextlib.suppress(libvirt.libvirtError):
        pod.conn.close()
    pod.daemon.stop()
    wait_for(
        lambda: sidecar.call("GET", "/healthz")[0] == 503, timeout=60, interval=0.3, what="sidecar sees libvirt go"
    )
    status, body = sidecar.call("POST", "/v1/fixup", {})
    assert status == 503, body
    assert sidecar.status()["libvirtConnected"] is False
    pod.daemon.start()
    pod.conn = pod.daemon.connect()
    pod.events = EventLog(pod.conn)
    wait_for(lambda: sidecar.call("GET", "/healthz")[0] == 200, timeout=90, interval=0.5, what="sidecar reconnects")
    assert sidecar.status()["libvirtConnected"] is True
    logged = sidecar_log(pod)[mark:]
    assert "lost the libvirt connection; reconnecting" in logged
    assert "POST /v1/fixup refused (503)" in logged
    assert "connected to libvirt at" in logged


def test_a_libvirt_restart_after_the_fixup_catches_up_with_a_noop(vm: Vm) -> None:
    restart_daemon(vm.pod)
    wait_for(
        lambda: any(r["trigger"] == "catch-up" for r in sidecar_of(vm.pod).fixups()),
        timeout=60,
        interval=0.5,
        what="catch-up record",
    )
    [catch_up] = [r for r in sidecar_of(vm.pod).fixups() if r["trigger"] == "catch-up"]
    assert catch_up["result"] == "noop"  # this arrival was already fixed


def test_a_restarted_sidecar_catches_up_with_a_migration_it_did_not_see_end(lab: Lab, vm: Vm) -> None:
    pod = vm.pod
    sidecar_of(pod).stop()
    lab.start_sidecar(pod, namespace=vm.namespace, vmi=vm.name, policy=vm.policy)
    wait_for(
        lambda: any(r["trigger"] == "catch-up" for r in sidecar_of(pod).fixups()),
        timeout=60,
        interval=0.5,
        what="catch-up record",
    )
    [catch_up] = sidecar_of(pod).fixups()
    assert (catch_up["trigger"], catch_up["result"]) == ("catch-up", "unverified")
    assert catch_up["interfaces"][0]["action"] == "link-refresh"  # the MAC is already the pod's


def test_after_libvirt_restarts_the_sidecar_reconnects_and_handles_the_next_migration(
    lab: Lab, vm: Vm, monkeypatch: pytest.MonkeyPatch
) -> None:
    start_sidecar = lab.start_sidecar

    def start_then_restart_libvirt(pod: Pod, **kwargs: Any) -> None:
        start_sidecar(pod, **kwargs)
        restart_daemon(pod)

    monkeypatch.setattr(lab, "start_sidecar", start_then_restart_libvirt)
    since = time.time()
    lab.migrate(vm, to_node="a")
    target = vm.pod
    record = automatic_fixup(target)
    assert record["result"] == "unverified", record
    assert record["interfaces"][0]["newMac"] == target.cni_mac
    wait_guest_nic(vm, mac=target.cni_mac, since=since)
    status = sidecar_of(target).status()
    assert [(i["alias"], i["mac"]) for i in status["interfaces"]] == [("ua-default", target.cni_mac)]
    assert status["restorePending"] == []
    assert metric(target, "bridge_migration_fixup_runs_total", trigger="resumed-migrated", result="unverified") == 1
    assert metric(target, "bridge_migration_interface_fixups_total", action="reattach", result="done") == 1
    assert "trigger=resumed-migrated result=unverified" in sidecar_log(target)
