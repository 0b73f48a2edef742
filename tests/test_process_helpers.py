"""lab.process.wait_for and lab.process.stop, the two helpers every harness here starts and stops
processes with, against real child processes (``sleep`` and Python) on this machine."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lab.process import ProcessExitedError, stop, wait_for

# Ignores SIGTERM, and says so once it does (so the test knows the handler is in place).
_STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(600)"
)
# Exits 0 on SIGTERM, as the node agent and the sidecar do.
_CLEAN = (
    "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); print('ready', flush=True); "
    "time.sleep(600)"
)


def test_wait_for_returns_the_first_truthy_value_of_the_predicate() -> None:
    calls: list[int] = []

    def third_time() -> str:
        calls.append(1)
        return "done" if len(calls) == 3 else ""

    assert wait_for(third_time, timeout=30, interval=0.01, what="the third call") == "done"
    assert len(calls) == 3


def test_wait_for_sees_a_file_another_process_creates(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    writer = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep(0.3); open({str(flag)!r}, 'w')"])
    try:
        assert wait_for(flag.exists, timeout=30, interval=0.02, what=f"{flag}") is True
    finally:
        stop(writer, grace=5)


def test_wait_for_times_out_naming_what_it_awaited_the_timeout_and_the_log() -> None:
    with pytest.raises(TimeoutError) as raised:
        wait_for(lambda: False, timeout=0.3, interval=0.05, what="the moon to turn blue", log=lambda: "LOG TAIL")
    message = str(raised.value)
    assert message.startswith("timed out after 0.3 s waiting for the moon to turn blue")
    assert message.endswith(":\nLOG TAIL")


def test_wait_for_states_the_timeout_in_seconds() -> None:
    with pytest.raises(TimeoutError, match=r"^timed out after 2 s waiting for nothing$"):
        wait_for(lambda: None, timeout=2, interval=0.5, what="nothing")


def test_ignored_exceptions_mean_not_yet_and_the_last_one_is_reported() -> None:
    def refused() -> bool:
        raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(TimeoutError) as raised:
        wait_for(refused, timeout=0.2, interval=0.05, what="a listener", ignore=(OSError,))
    assert "(last: ConnectionRefusedError: [Errno 111] Connection refused)" in str(raised.value)
    assert isinstance(raised.value.__cause__, ConnectionRefusedError)


def test_an_exception_not_ignored_propagates_at_once() -> None:
    def broken() -> bool:
        raise KeyError("status")

    with pytest.raises(KeyError):
        wait_for(broken, timeout=30, interval=0.05, what="a status")


def test_wait_for_fails_as_soon_as_the_watched_process_exits(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import sys; print('bad flag'); sys.exit(3)"])
    with pytest.raises(ProcessExitedError) as raised:
        # Far longer than the test may take: only the exit can end the wait.
        wait_for(lambda: False, timeout=600, interval=0.05, what="the server", proc=proc, log=lambda: "bad flag")
    message = str(raised.value)
    assert f"pid {proc.pid} ({sys.executable} -c " in message
    assert "exited with status 3 while waiting for the server:\nbad flag" in message
    assert isinstance(raised.value, RuntimeError)


def test_stop_ends_a_process_that_honours_sigterm_with_sigterm() -> None:
    proc = subprocess.Popen(["sleep", "600"])
    assert stop(proc, grace=30) == -signal.SIGTERM
    assert proc.returncode == -signal.SIGTERM


def test_stop_kills_a_process_that_ignores_sigterm_after_the_grace() -> None:
    proc = subprocess.Popen([sys.executable, "-c", _STUBBORN], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"  # SIGTERM is ignored from here on
    assert stop(proc, grace=0.5) == -signal.SIGKILL
    proc.stdout.close()


def test_stop_returns_the_exit_status_of_a_process_that_already_exited() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(7)"])
    proc.wait(timeout=30)
    assert stop(proc, grace=5) == 7


def test_a_clean_sigterm_exit_is_its_own_status() -> None:
    proc = subprocess.Popen([sys.executable, "-c", _CLEAN], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    assert stop(proc, grace=30) == 0
    proc.stdout.close()
