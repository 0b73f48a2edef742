"""Issue 27: the node agent sets a migrated VM's stale macvtap down on the source node.

The root tests build the bug for real, in network namespaces of their own: a "node" with a veth
uplink (the macvtaps' lower device), a "pod" holding a bridge-mode macvtap made on that uplink and
renamed `pod<11 hex>` as macvtap-cni does, with the VM's MAC and nobody reading it (the source
QEMU is gone), a "neighbour" with its own bridge-mode macvlan on the same uplink, and "the
network" on the far end of the veth, where a stand-in host holds the VM's MAC, as the migrated VM
does on its new node. A fake virtqemud (a plain unix socket server as uid 107, in the pod's
namespace, at the kubelet's path) lets the agent find the pod's namespace as it does in a cluster.
The other tests run the watch's logic over a fake libvirt connection, without root.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt
import pytest

from sidecar.cli import build_parser
from sidecar.core.events import EventType, LifecycleEvent
from sidecar.node.fixup import reachable_socket
from sidecar.node.macvtap_release import (
    STOPPED_MIGRATED,
    MacvtapReleaser,
    ReleaseResult,
    ethernet_targets,
    launcher_sockets,
    release_behind,
    release_macvtaps,
)
from sidecar.node.netns import peer_pid
from sidecar.node.settings import LAUNCHER_UID, NodeAgentSettings, node_agent_settings_from_args
from sidecar.node.target import SOCKET_IN_POD
from tests.sidecar.node.launchers import SOURCE_UID, TARGET_UID, listening_socket

DOMAIN = "default_server"
VM_MAC = "02:00:00:27:59:12"
NEIGHBOUR_IP, FAR_IP = "10.77.0.1", "10.77.0.2"


def domain_xml(*targets: tuple[str, str]) -> str:
    """A domain with one `<interface type=...><target dev=.../>` per (type, dev); dev '' has no target."""
    nics = "".join(
        f"<interface type='{kind}'><mac address='{VM_MAC}'/>"
        + (f"<target dev='{dev}' managed='no'/>" if dev else "")
        + "</interface>"
        for kind, dev in targets
    )
    return f"<domain type='kvm'><name>{DOMAIN}</name><devices>{nics}</devices></domain>"


# --- pure parts and flags ---


def test_stopped_migrated_is_libvirts_own_number() -> None:
    assert STOPPED_MIGRATED == libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED
    assert EventType.STOPPED == libvirt.VIR_DOMAIN_EVENT_STOPPED


def test_the_targets_are_those_of_ethernet_interfaces_only() -> None:
    xml = domain_xml(("ethernet", "pod1a2b3c4d5e6"), ("bridge", "vnet0"), ("ethernet", ""), ("ethernet", "tap0"))
    assert ethernet_targets(xml) == ("pod1a2b3c4d5e6", "tap0")


def _parse(*argv: str) -> NodeAgentSettings:
    args: argparse.Namespace = build_parser().parse_args(["node-agent", *argv])
    return node_agent_settings_from_args(args)


def test_the_release_is_off_by_default_and_watches_uid_107(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BM_SIDECAR_RELEASE_STALE_MACVTAP", raising=False)
    monkeypatch.delenv("BM_SIDECAR_LAUNCHER_UID", raising=False)
    default = _parse()
    assert (default.release_stale_macvtap, default.launcher_uid, LAUNCHER_UID) == (False, 107, 107)
    on = _parse("--release-stale-macvtap", "--launcher-uid", "0")
    assert (on.release_stale_macvtap, on.launcher_uid) == (True, 0)
    monkeypatch.setenv("BM_SIDECAR_RELEASE_STALE_MACVTAP", "true")
    assert _parse().release_stale_macvtap is True
    monkeypatch.setenv("BM_SIDECAR_RELEASE_STALE_MACVTAP", "maybe")
    with pytest.raises(ValueError, match="--release-stale-macvtap"):
        _parse()
    monkeypatch.delenv("BM_SIDECAR_RELEASE_STALE_MACVTAP")
    with pytest.raises(ValueError, match="--launcher-uid"):
        _parse("--launcher-uid", "-1")


def test_only_a_socket_itself_owned_by_the_launcher_uid_is_a_launcher(tmp_path: Path) -> None:
    pods = tmp_path / "pods"
    served = listening_socket(pods / TARGET_UID / SOCKET_IN_POD)  # longer than a socket address: /proc/self/fd
    try:
        link = pods / SOURCE_UID / SOCKET_IN_POD  # a pod pointing the agent at another pod's socket
        link.parent.mkdir(parents=True)
        link.symlink_to(pods / TARGET_UID / SOCKET_IN_POD)
        plain = pods / "plain-file" / SOCKET_IN_POD
        plain.parent.mkdir(parents=True)
        plain.write_text("")
        (pods / "no-socket").mkdir()
        assert launcher_sockets(pods, os.getuid()) == {TARGET_UID: pods / TARGET_UID / SOCKET_IN_POD}
        assert launcher_sockets(pods, os.getuid() + 1) == {}
        assert launcher_sockets(tmp_path / "missing", os.getuid()) == {}
    finally:
        served.close()


def test_the_peer_pid_is_the_process_serving_the_socket(tmp_path: Path) -> None:
    path = tmp_path / "pods" / TARGET_UID / SOCKET_IN_POD
    served = listening_socket(path)
    try:
        with reachable_socket(path) as address:
            assert peer_pid(address) == os.getpid()
    finally:
        served.close()


def test_the_agents_own_network_namespace_is_refused_and_nothing_raises() -> None:
    (own,) = release_macvtaps(os.getpid(), ["lo"])
    assert (own.outcome, own.released) == ("error", False)
    assert "agent's or the node's network namespace" in own.detail
    assert release_macvtaps(os.getpid(), []) == []
    (gone,) = release_macvtaps(2**22 + 1, ["pod0"])  # above the kernel's pid limit: no such process
    assert gone.outcome == "error"


# --- the watch over a fake libvirt connection ---


@dataclass
class FakeDomain:
    """What the watch asks of a libvirt domain: its name and its XML."""

    domain_name: str
    xml: str
    broken: bool = False
    reads: int = 0

    def name(self) -> str:
        return self.domain_name

    def XMLDesc(self, _flags: int) -> str:  # noqa: N802 - libvirt's method name
        self.reads += 1
        if self.broken:
            raise RuntimeError("libvirt: cannot read the XML")
        return self.xml


@dataclass
class FakeLibvirt:
    """A launcher's libvirt connection: the domains it has, and the callbacks the watch gave it
    (the test plays libvirt's event thread by calling them)."""

    uri: str
    on_lifecycle: Callable[[LifecycleEvent], None]
    on_connected: Callable[[], None]
    domains: dict[str, FakeDomain] = field(default_factory=dict)
    started: bool = False
    stopped: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped.set()

    def connection(self) -> Any:
        return self

    def listAllDomains(self, _flags: int) -> list[FakeDomain]:  # noqa: N802 - libvirt's method name
        return list(self.domains.values())

    def lookupByName(self, name: str) -> FakeDomain:  # noqa: N802 - libvirt's method name
        return self.domains[name]

    def emit(self, event: int, detail: int) -> float:
        at = time.time()
        self.on_lifecycle(LifecycleEvent(DOMAIN, event, detail, at))
        return at


class Rig:
    """The releaser over fake libvirt connections; releases recorded, or done for real."""

    def __init__(self, settings: NodeAgentSettings, release: Callable[[str, Sequence[str]], list[ReleaseResult]]):
        self.connections: list[FakeLibvirt] = []
        self.released = threading.Event()
        self.calls: list[tuple[str, tuple[str, ...]]] = []

        def connect(uri: str, on_lifecycle: Callable[[LifecycleEvent], None], on_connected: Callable[[], None]) -> Any:
            fake = FakeLibvirt(uri, on_lifecycle, on_connected)
            self.connections.append(fake)
            return fake

        def recording(address: str, devices: Sequence[str]) -> list[ReleaseResult]:
            self.calls.append((address, tuple(devices)))
            try:
                return release(address, devices)
            finally:
                self.released.set()

        self.releaser = MacvtapReleaser(settings, connect=connect, release=recording, interval=0.05)


def _wait(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


def _pretend(address: str, devices: Sequence[str]) -> list[ReleaseResult]:
    return [ReleaseResult(d, "released", "link set down", time.time()) for d in devices]


def test_a_domain_that_migrated_away_has_its_ethernet_targets_released_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sidecar.node.macvtap_release")
    pods = tmp_path / "pods"
    served = listening_socket(pods / TARGET_UID / SOCKET_IN_POD)
    rig = Rig(NodeAgentSettings(kubelet_pods_dir=pods, launcher_uid=os.getuid()), _pretend)
    try:
        rig.releaser.scan_once()
        assert rig.releaser.watched == [TARGET_UID]
        (fake,) = rig.connections
        assert fake.started and fake.uri.startswith("qemu+unix:///session?socket=/proc/self/fd/")
        fake.domains[DOMAIN] = FakeDomain(DOMAIN, domain_xml(("ethernet", "podaaaaaaaaaaa")))
        fake.on_connected()
        _wait(lambda: fake.domains[DOMAIN].reads == 1, "the XML read after the connect")
        # Hot-plugged NIC: the XML is read again on RESUMED, so the release knows it.
        fake.domains[DOMAIN].xml = domain_xml(("ethernet", "podaaaaaaaaaaa"), ("ethernet", "podbbbbbbbbbbb"))
        fake.emit(EventType.RESUMED, 0)
        fake.emit(EventType.STOPPED, 0)  # destroyed, not migrated: nothing to release
        time.sleep(0.2)
        assert rig.calls == []
        fake.emit(EventType.STOPPED, STOPPED_MIGRATED)
        assert rig.released.wait(5)
        fake.emit(EventType.STOPPED, STOPPED_MIGRATED)  # a second event: already released, no known targets
        _wait(lambda: "before its interfaces were read" in caplog.text, "the second event to be handled")
        assert [devices for _, devices in rig.calls] == [("podaaaaaaaaaaa", "podbbbbbbbbbbb")]
        assert rig.calls[0][0].startswith("/proc/self/fd/")  # the same socket, as the watch reaches it
        released = [r.getMessage() for r in caplog.records if "released:" in r.getMessage()]
        assert len(released) == 2
        assert f"podaaaaaaaaaaa of domain {DOMAIN} (pod {TARGET_UID}) released: link set down" in released[0]
        assert released[0].endswith("ms after STOPPED/MIGRATED")
        # The pod is gone: its watch and connection are closed at the next scan.
        served.close()
        (pods / TARGET_UID / SOCKET_IN_POD).unlink()
        rig.releaser.scan_once()
        assert rig.releaser.watched == []
        assert fake.stopped.wait(5)
    finally:
        served.close()
        rig.releaser.stop()


def test_errors_are_logged_and_the_watch_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pods = tmp_path / "pods"
    served = listening_socket(pods / TARGET_UID / SOCKET_IN_POD)
    failures = iter([RuntimeError("boom")])

    def release_failing_once(address: str, devices: Sequence[str]) -> list[ReleaseResult]:
        for exc in failures:
            raise exc
        return [ReleaseResult(d, "error", "EPERM: no CAP_NET_ADMIN") for d in devices]

    rig = Rig(NodeAgentSettings(kubelet_pods_dir=pods, launcher_uid=os.getuid()), release_failing_once)
    rig.releaser.start()  # the real scan loop
    try:
        _wait(lambda: rig.releaser.watched == [TARGET_UID], "the scan to find the launcher")
        (fake,) = rig.connections
        fake.domains[DOMAIN] = FakeDomain(DOMAIN, domain_xml(("ethernet", "podaaaaaaaaaaa")), broken=True)
        fake.on_connected()  # the XML cannot be read: a warning
        _wait(lambda: "cannot read a domain's XML: libvirt: cannot read the XML" in caplog.text, "the XML warning")
        fake.domains[DOMAIN].broken = False
        fake.emit(EventType.STARTED, 0)
        fake.emit(EventType.STOPPED, STOPPED_MIGRATED)  # the release raises: logged
        _wait(rig.released.is_set, "the first release")
        rig.released.clear()
        fake.emit(EventType.DEFINED, 0)
        fake.emit(EventType.STOPPED, STOPPED_MIGRATED)  # reported not released
        assert rig.released.wait(5)
        _wait(lambda: "not released: EPERM" in caplog.text, "the error's log line")
        assert "RuntimeError: boom" in caplog.text
    finally:
        served.close()
        rig.releaser.stop()
    assert rig.connections[0].stopped.is_set()


# --- real namespaces, real macvtap, real traffic ---

FAKE_VIRTQEMUD = """
import os, socket, sys
path = sys.argv[1]
# As the agent does: the kubelet's path is longer than a socket address holds.
folder = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY)
short = f"/proc/self/fd/{folder}/{os.path.basename(path)}"
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(short)
os.chown(short, 107, 107)
os.setgid(107)
os.setuid(107)  # virtqemud runs as KubeVirt's launcher user
server.listen(8)
print("ready", flush=True)
while True:
    server.accept()[0].close()
"""


def ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"ip {' '.join(args)}: {done.stderr}"
    return done.stdout


@dataclass
class Segment:
    """One node's L2 segment with a stale macvtap in a pod, and the fake virtqemud serving that pod."""

    ns: dict[str, str]  # role -> netns name
    stale: str  # the stale macvtap's name in the pod, pod<11 hex>
    socket: Path  # the fake virtqemud's socket at the kubelet's path
    pods: Path
    virtqemud: subprocess.Popen[str]

    def link(self, role: str, name: str) -> dict[str, Any]:
        (found,) = json.loads(ip("-j", "-s", "-n", self.ns[role], "link", "show", "dev", name))
        return dict(found)

    def ping(self, wait_s: int = 1) -> bool:
        cmd = ["ip", "netns", "exec", self.ns["neighbour"], "ping", "-c", "1", "-W", str(wait_s), FAR_IP]
        return subprocess.run(cmd, capture_output=True, check=False).returncode == 0


def _build(ns: dict[str, str], stale: str) -> None:
    node, pod, neighbour, net = ns["node"], ns["pod"], ns["neighbour"], ns["net"]
    ip("-n", node, "link", "add", "up0", "type", "veth", "peer", "name", "up1", "netns", net)
    ip("-n", node, "link", "set", "up0", "up")
    # The far side: the migrated VM on another node, reached through the uplink.
    ip("-n", net, "link", "set", "up1", "address", VM_MAC, "up")
    ip("-n", net, "addr", "add", f"{FAR_IP}/24", "dev", "up1")
    # The source pod's macvtap, made on the node and moved into the pod as macvtap-cni does.
    ip("-n", node, "link", "add", "mvt0", "link", "up0", "type", "macvtap", "mode", "bridge")
    ip("-n", node, "link", "set", "mvt0", "netns", pod)
    ip("-n", pod, "link", "set", "mvt0", "name", stale, "address", VM_MAC, "up")
    # A link of the pod that is not a macvtap (a bridge binding's would be a tap): never touched.
    ip("-n", pod, "link", "add", "veth7", "type", "veth", "peer", "name", "veth8")
    ip("-n", pod, "link", "set", "veth7", "up")
    # The neighbour VM on the same node and lower device.
    ip("-n", node, "link", "add", "mvl0", "link", "up0", "type", "macvlan", "mode", "bridge")
    ip("-n", node, "link", "set", "mvl0", "netns", neighbour)
    ip("-n", neighbour, "addr", "add", f"{NEIGHBOUR_IP}/24", "dev", "mvl0")
    ip("-n", neighbour, "link", "set", "mvl0", "up")


@pytest.fixture
def segment(tmp_path: Path) -> Iterator[Segment]:
    prefix = f"bmlt-{secrets.token_hex(4)}"
    ns = {role: f"{prefix}-{role}" for role in ("node", "pod", "neighbour", "net")}
    created: list[str] = []
    virtqemud: subprocess.Popen[str] | None = None
    try:
        for name in ns.values():
            ip("netns", "add", name)
            created.append(name)
        stale = f"pod{secrets.token_hex(6)[:11]}"
        _build(ns, stale)
        pods = tmp_path / "pods"
        path = pods / SOURCE_UID / SOCKET_IN_POD
        path.parent.mkdir(parents=True)
        cmd = ["ip", "netns", "exec", ns["pod"], sys.executable, "-c", FAKE_VIRTQEMUD, str(path)]
        virtqemud = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert virtqemud.stdout is not None and virtqemud.stdout.readline() == "ready\n"
        yield Segment(ns, stale, path, pods, virtqemud)
    finally:
        if virtqemud is not None:
            virtqemud.kill()
            virtqemud.wait()
            if virtqemud.stdout is not None:
                virtqemud.stdout.close()
        for name in created:
            subprocess.run(["ip", "netns", "delete", name], check=False)


def _rx_packets(segment: Segment) -> int:
    count: int = segment.link("pod", segment.stale)["stats64"]["rx"]["packets"]
    return count


@pytest.mark.root
@pytest.mark.timeout(60)
def test_a_stale_macvtap_swallows_a_neighbours_frames_until_release_macvtaps_sets_it_down(segment: Segment) -> None:
    before = _rx_packets(segment)
    assert not segment.ping(), "the neighbour reached the VM's MAC through a stale macvtap that is up"
    assert _rx_packets(segment) > before, "the neighbour's frames did not go into the stale macvtap"
    with reachable_socket(segment.socket) as address:
        pid = peer_pid(address)
    assert pid == segment.virtqemud.pid  # `ip netns exec` execs the fake: same process
    results = release_macvtaps(pid, [segment.stale, "veth7", "nosuch0"])
    assert [(r.device, r.outcome, r.released) for r in results] == [
        (segment.stale, "released", True),
        ("veth7", "not-macvtap", False),
        ("nosuch0", "missing", False),
    ]
    assert "'veth'" in results[1].detail
    assert "UP" not in segment.link("pod", segment.stale)["flags"]
    assert "UP" in segment.link("pod", "veth7")["flags"]
    assert segment.ping(wait_s=2), "the neighbour still cannot reach the VM's MAC after the release"
    (again,) = release_macvtaps(pid, [segment.stale])
    assert (again.outcome, again.released) == ("already-down", True)


@pytest.mark.root
@pytest.mark.timeout(60)
def test_the_watch_releases_the_stale_macvtap_when_its_domain_migrates_away(
    segment: Segment, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sidecar.node.macvtap_release")
    # Default launcher uid (107) and the product's release path: SO_PEERCRED, /proc/<pid>/ns/net.
    rig = Rig(NodeAgentSettings(kubelet_pods_dir=segment.pods), release=release_behind)
    try:
        rig.releaser.scan_once()
        assert rig.releaser.watched == [SOURCE_UID]
        (fake,) = rig.connections
        fake.domains[DOMAIN] = FakeDomain(DOMAIN, domain_xml(("ethernet", segment.stale), ("ethernet", "veth7")))
        fake.on_connected()
        assert "UP" in segment.link("pod", segment.stale)["flags"]
        fake.emit(EventType.SUSPENDED, 1)  # paused for the migration's end: nothing yet
        fake.emit(EventType.STOPPED, STOPPED_MIGRATED)
        assert rig.released.wait(5)
        assert "UP" not in segment.link("pod", segment.stale)["flags"]
        assert "UP" in segment.link("pod", "veth7")["flags"]
        assert segment.ping(wait_s=2)
        (line,) = [r.getMessage() for r in caplog.records if "released:" in r.getMessage()]
        assert f"stale macvtap {segment.stale} of domain {DOMAIN} (pod {SOURCE_UID}) released" in line
    finally:
        rig.releaser.stop()
