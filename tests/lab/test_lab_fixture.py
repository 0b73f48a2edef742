"""The lab fixture itself: namespaces shaped like KubeVirt pods, one libvirtd per pod, cleanup."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lab.cleanup import lab_namespaces
from lab.cluster import Lab
from lab.network import NETWORKS
from lab.shell import in_netns, ip, run
from lab.stuntime import StunProbe

pytestmark = pytest.mark.lab


def _links(netns: str) -> dict[str, str]:
    """name -> 'master=<bridge> mac=<mac>' for every link of a namespace."""
    out: dict[str, str] = {}
    for line in ip(netns, "-o", "link", "show").splitlines():
        fields = line.split()
        name = fields[1].rstrip(":").split("@")[0]
        master = fields[fields.index("master") + 1] if "master" in fields else "-"
        mac = fields[fields.index("link/ether") + 1] if "link/ether" in fields else "-"
        out[name] = f"master={master} mac={mac}"
    return out


def test_a_pod_namespace_is_laid_out_like_kubevirt_bridge_binding_and_cleanup_removes_it() -> None:
    with Lab() as lab:
        lab.add_nodes("a", "b")
        first = lab.create_pod(vm="probe", node="a")
        second = lab.create_pod(vm="probe", node="b")
        links = _links(first.net.netns)
        assert links["eth0-nic"].startswith("master=k6t-eth0")
        assert links["tap0"].startswith("master=k6t-eth0")
        assert links["eth0"] == f"master=- mac={first.cni_mac}"
        # Each pod has its own daemon with its own identity (or migration refuses "the same host").
        assert first.conn.getHostname() and first.daemon.host_uuid != second.daemon.host_uuid
        assert first.conn.getURI() != second.conn.getURI()
        # The node routes to the pod through the node-side veth, which holds the gateway address.
        node_routes = ip(lab.nodes["a"].netns, "route", "show", f"{first.ip}/32")
        assert first.net.host_veth in node_routes
        assert first.ip.startswith("10.244.1.") and second.ip.startswith("10.244.2.")
        lab_id = lab.id
        assert len(lab_namespaces(lab_id)) == 4
    assert lab_namespaces(lab_id) == []
    assert f"{lab_id}" not in run(["ip", "netns", "list"])


def test_a_lab_closed_by_a_failed_scenario_stops_the_stun_probes_it_left_running() -> None:
    """run_steps tears its lab down with ``with lab``; a step that raises after migrate_probed
    started the probes (a recovery timeout) never finishes them. Lab.close stops them: cleanup only
    kills their ping, so its Popen (never waited) and pipe went to the garbage collector, an
    unraisable ResourceWarning in whichever later test it collected in (test_plan_properties in CI)."""
    with pytest.raises(TimeoutError), Lab() as lab:
        lab.add_nodes("a", "b")
        probe = StunProbe(lab.nodes["a"].netns, "10.244.1.2")
        raise TimeoutError("no lease in the target pod")
    ping = probe._old._proc
    assert ping is not None and ping.returncode is not None, "ping not reaped"
    assert ping.stdout is not None and ping.stdout.closed, "ping's pipe left open"


def test_a_deleted_pod_leaves_no_namespace_and_its_node_no_route(lab: Lab) -> None:
    pod = lab.create_pod(vm="gone", node="b", networks=NETWORKS)
    node = lab.nodes["b"]
    assert pod.net.nic("secondary").ip.startswith("10.245.2.")
    assert ip(node.netns, "route", "show", f"{pod.ip}/32").strip()
    lab.delete_pod(pod)
    assert pod.net.netns not in run(["ip", "netns", "list"])
    assert not ip(node.netns, "route", "show", f"{pod.ip}/32").strip()


def test_python_m_lab_cleanup_removes_a_lab_nobody_closed() -> None:
    orphan = Lab()
    orphan.add_nodes("a")
    orphan.create_pod(vm="orphan", node="a")
    assert lab_namespaces(orphan.id)
    # --lab-id: other labs may be running on this machine right now.
    out = run([sys.executable, "-m", "lab", "cleanup", "--lab-id", orphan.id], timeout=120)
    assert f"netns bml-{orphan.id}-pod1" in out
    assert lab_namespaces(orphan.id) == []
    assert not orphan.run_dir.exists()
    orphan.close()  # nothing left to do, and it must not fail


def _uids(netns: str) -> dict[str, int]:
    """Command name -> real uid of every process in a network namespace."""
    out: dict[str, int] = {}
    for pid in run(["ip", "netns", "pids", netns]).split():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        name = Path(cmdline[0].decode()).name if cmdline and cmdline[0] else "?"
        if name == "python" or name.startswith("python3"):
            name = " ".join(c.decode() for c in cmdline[1:4])  # "-m sidecar serve"
        uid = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("Uid:"))
        out[name] = uid
    return out


def test_the_pods_daemon_and_qemu_run_as_107_in_session_mode_and_the_sidecar_uses_kubevirts_uri(lab: Lab) -> None:
    """KubeVirt's non-root launcher (facts L1, L4): virtqemud and QEMU as uid 107, the tap owned
    by 107, and the sidecar on qemu+unix:///session?socket=/var/run/libvirt/virtqemud-sock."""
    vm = lab.start_vm(name="nonroot-launcher", node="a", policy="pin", sidecar=True)
    vm.console.wait("dhcp-ack", nic="eth0", timeout=180)
    uids = _uids(vm.pod.net.netns)
    assert uids["libvirtd"] == 107
    assert uids["qemu-system-x86_64"] == 107
    tun = ["cat", "/sys/class/net/tap0/owner", "/sys/class/net/tap0/group"]
    assert run(in_netns(vm.pod.net.netns, tun)).split() == ["107", "107"]
    assert vm.pod.conn.getURI().startswith("qemu+unix:///session")
    assert vm.pod.sidecar is not None
    sidecar_argv = Path(f"/proc/{vm.pod.sidecar.process.pid}/cmdline").read_bytes().split(b"\0")
    assert b"--libvirt-uri" not in sidecar_argv  # the default: KubeVirt's non-root URI
    status = vm.pod.sidecar.status()
    assert status["libvirtConnected"] is True, status
    assert status["libvirtUri"] == "qemu+unix:///session?socket=/var/run/libvirt/virtqemud-sock"
