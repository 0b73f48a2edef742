"""Delivery inject: the sidecar process with no hook server waits for virtqemud's socket and ends
itself, with exit code 0, once the VM in its pod has ended (sidecar/pod/endwatch.py).

The end rule is driven here with a fake clock and fake observations (what the watcher and
libvirt would say); the real libvirt daemon going away is the lab's test
(tests/sidecar/test_lab_inject.py). The process test runs the real `python -m sidecar serve`."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

import pytest

from sidecar.pod.endwatch import SHUTOFF, UNKNOWN, EndWatch, socket_of, wait_for_socket
from tests.sidecar.serving import SidecarProcess

RUNNING, PAUSED = 1, 3


class Observed:
    """What the watcher and libvirt say at each observation (set by the test), on a fake clock."""

    def __init__(self) -> None:
        self._connected = False
        self.reached = False  # the watcher's record: was it ever connected
        self.state: int | None = None
        self.now = 0.0

    @property
    def connected(self) -> bool:
        return self._connected

    @connected.setter
    def connected(self, value: bool) -> None:
        self._connected = value
        self.reached = self.reached or value

    def watch(self, grace: float = 10.0) -> EndWatch:
        return EndWatch(
            connected=lambda: self.connected,
            reached=lambda: self.reached,
            domain_state=lambda: self.state,
            grace_s=grace,
            clock=lambda: self.now,
        )

    def run(self, watch: EndWatch, seconds: float) -> bool:
        """Observe once a second for ``seconds``; True as soon as the watch says ended."""
        end = self.now + seconds
        while self.now <= end:
            if watch.ended():
                return True
            self.now += 1
        return False


def test_the_socket_is_read_from_kubevirts_non_root_uri() -> None:
    assert socket_of("qemu+unix:///session?socket=/var/run/libvirt/virtqemud-sock") == Path(
        "/var/run/libvirt/virtqemud-sock"
    )
    assert socket_of("qemu:///system") is None


def test_startup_waits_for_the_socket_to_appear(tmp_path: Path) -> None:
    path = tmp_path / "virtqemud-sock"
    stop = threading.Event()
    listener = socket.socket(socket.AF_UNIX)

    def appear() -> None:
        time.sleep(0.5)
        listener.bind(str(path))  # a unix socket file, as virtqemud makes it

    appearing = threading.Thread(target=appear)
    appearing.start()
    started = time.monotonic()
    with listener:
        assert wait_for_socket(path, stop) is True
        assert time.monotonic() - started >= 0.5
        appearing.join()
    stop.set()
    assert wait_for_socket(tmp_path / "never", stop) is False  # a stop ends the wait


def test_a_socket_directory_not_yet_open_to_us_is_waited_on_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A FAKE file system error: as root (CI) a mode-0700 directory cannot refuse a stat, so
    # Path.exists is made to raise EACCES twice, as it does for the non-root fixer while the
    # launcher's runtime directory is still closed to it. Before, the error ended the wait's thread.
    path = tmp_path / "virtqemud-sock"
    path.touch()
    real_exists = Path.exists
    refusals = iter([True, True])

    def exists(self: Path, **kwargs: bool) -> bool:
        if self == path and next(refusals, False):
            raise PermissionError(13, "Permission denied", str(self))
        return real_exists(self, **kwargs)

    monkeypatch.setattr(Path, "exists", exists)
    with caplog.at_level(logging.WARNING, logger="sidecar.pod.endwatch"):
        assert wait_for_socket(path, threading.Event(), interval=0.01) is True
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1  # said once, not at every look
    assert "cannot look for the libvirt socket" in said[0]
    assert "Permission denied" in said[0]


def test_before_libvirt_was_ever_reached_nothing_ends_it() -> None:
    seen = Observed()
    assert seen.run(seen.watch(), 600) is False


def test_a_target_waiting_for_its_guest_stays_and_ends_when_the_connection_goes() -> None:
    seen = Observed()
    watch = seen.watch(grace=10)
    seen.connected = True  # connected, no domain yet: a migration target before the guest arrives
    assert seen.run(watch, 600) is False
    seen.connected = False  # virt-launcher exited and took virtqemud with it
    assert seen.run(watch, 8) is False
    assert seen.run(watch, 5) is True
    assert watch.reason == "the libvirt connection is gone for 10 s: the VM has ended"


def test_a_domain_that_went_away_ends_it_and_one_that_comes_back_in_time_does_not() -> None:
    seen = Observed()
    watch = seen.watch(grace=10)
    seen.connected, seen.state = True, PAUSED  # an incoming migration
    assert seen.run(watch, 5) is False
    seen.state = None
    assert seen.run(watch, 5) is False
    seen.state = RUNNING  # back within the grace: the count starts again
    assert seen.run(watch, 5) is False
    seen.state = SHUTOFF  # migrated away or shut down
    assert seen.run(watch, 12) is True
    assert "shut off" in watch.reason


def test_a_connection_shorter_than_one_observation_still_counts() -> None:
    seen = Observed()
    watch = seen.watch(grace=2)
    seen.connected = True
    seen.connected = False  # up and down between two observations
    assert seen.run(watch, 5) is True


def test_a_libvirt_call_that_fails_on_a_live_connection_is_no_evidence() -> None:
    seen = Observed()
    watch = seen.watch(grace=1)
    seen.connected, seen.state = True, UNKNOWN
    assert seen.run(watch, 60) is False
    assert watch.saw_domain is False


def test_the_process_in_inject_mode_serves_no_hook_and_waits_for_the_socket(tmp_path: Path) -> None:
    hook_dir = tmp_path / "hooks"
    hook_dir.mkdir()  # even with a hook directory there, inject mode serves no hook
    sock = tmp_path / "virtqemud-sock"
    proc = SidecarProcess(
        libvirt_uri=f"qemu+unix:///session?socket={sock}",
        tmp=tmp_path,
        hook_dir=hook_dir,
        extra=["--delivery", "inject"],
    )
    try:
        proc.wait_ready()
        health = proc.client.get("/healthz")
        assert health.status_code == 503
        assert health.json()["hookServerEnabled"] is False
        assert f"waiting for {sock} to appear" in health.json()["detail"]
        assert list(hook_dir.iterdir()) == []
        proc.wait_for(lambda: "waiting for the libvirt socket" in proc.log(), timeout=10, what="the wait logged")
    finally:
        assert proc.stop() == 0  # SIGTERM (the pod deleted) is no failure either


def test_a_bad_delivery_value_is_refused(tmp_path: Path) -> None:
    proc = SidecarProcess(libvirt_uri="test:///default", tmp=tmp_path, extra=["--delivery", "sideways"])
    assert proc.proc.wait(30) == 2
    assert "--delivery must be one of hook, inject" in proc.log()
    proc.stop()
