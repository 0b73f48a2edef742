"""Free loopback ports and waiting for a process to answer on one."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A port nothing listens on right now (the kernel picks it; a tiny race is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


class StartupError(RuntimeError):
    """A process we started did not come up; the message carries the tail of its log."""


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until(
    ready: Callable[[], bool],
    *,
    proc: subprocess.Popen[bytes],
    what: str,
    log: Path,
    timeout_s: float,
) -> None:
    """Poll ``ready`` until it is true; fail early, with the log, when ``proc`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StartupError(f"{what} exited with status {proc.returncode}:\n{log_tail(log)}")
        if ready():
            return
        time.sleep(0.2)
    raise StartupError(f"{what} not ready after {timeout_s:.0f} s:\n{log_tail(log)}")
