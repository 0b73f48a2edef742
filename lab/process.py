"""Long-running lab processes (libvirtd, the DHCP stand-in, the sidecar) and how they are stopped.

Also the two helpers every test harness here uses (lab, kubelab, tests, bench): :func:`wait_for`
(poll until ready, or fail naming what and how long) and :func:`stop` (SIGTERM, a grace period,
SIGKILL). Standard library only, so kubelab and bench import it without the lab's dependencies.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class LabProcess:
    """A child process with its output in a log file, stopped with SIGTERM then SIGKILL."""

    def __init__(self, *, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            # Own session: a Ctrl-C on the test runner must not kill it before cleanup runs.
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        stop(self.proc, grace=timeout)


class ProcessExitedError(RuntimeError):
    """The process :func:`wait_for` watched exited before the wait was over."""


def _describe(proc: subprocess.Popen[Any]) -> str:
    args = proc.args
    argv = [os.fsdecode(a) for a in ([args] if isinstance(args, str | bytes | os.PathLike) else args)]
    shown = " ".join(argv[:4]) + (" ..." if len(argv) > 4 else "")
    return f"pid {proc.pid} ({shown})"


def wait_for(
    predicate: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.1,
    what: str,
    proc: subprocess.Popen[Any] | None = None,
    log: Callable[[], str] | None = None,
    ignore: tuple[type[Exception], ...] = (),
) -> T:
    """Poll ``predicate()`` every ``interval`` s until it returns something truthy, and return that.

    After ``timeout`` s raise TimeoutError naming ``what`` and the timeout. ``proc``: the process
    that should make it true; when it exits first, raise ProcessExitedError at once with its exit
    status. ``log``: text (a log tail) appended to either error. ``ignore``: exceptions from
    ``predicate`` that mean "not yet" (a connection refused); the last one is the error's cause.
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        if proc is not None and proc.poll() is not None:
            message = f"{_describe(proc)} exited with status {proc.returncode} while waiting for {what}"
            raise ProcessExitedError(message + (f":\n{log()}" if log else "")) from last
        try:
            value = predicate()
        except ignore as exc:
            last = exc
        else:
            if value:
                return value
        if time.monotonic() >= deadline:
            message = f"timed out after {timeout:g} s waiting for {what}"
            if last is not None:
                message += f" (last: {type(last).__name__}: {last})"
            raise TimeoutError(message + (f":\n{log()}" if log else "")) from last
        time.sleep(interval)


def stop(proc: subprocess.Popen[Any], *, grace: float) -> int:
    """Stop ``proc``: SIGTERM, up to ``grace`` s for it to exit, then SIGKILL and up to ``grace``
    s more. Returns its exit status (negative: the signal that ended it, as in Popen.returncode).
    A process that already exited is only reaped."""
    if proc.poll() is None:
        proc.terminate()  # a no-op (no ProcessLookupError) if it exited meanwhile
        try:
            return proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(timeout=grace)
