"""Running commands on the host and inside the lab's network namespaces."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence


class CommandError(RuntimeError):
    """A command the lab depends on failed; the message carries its stderr."""


def run(args: Sequence[str], *, check: bool = True, timeout: float = 60.0) -> str:
    """Run a command, return its stdout; raise CommandError with stderr when it fails."""
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise CommandError(f"{' '.join(args)} -> rc={proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def in_netns(netns: str, args: Sequence[str]) -> list[str]:
    """The argv that runs ``args`` inside network namespace ``netns``."""
    return ["ip", "netns", "exec", netns, *args]


def ip(netns: str, *args: str, check: bool = True) -> str:
    """``ip -n <netns> ...``"""
    return run(["ip", "-n", netns, *args], check=check)


def sysctl(netns: str, key: str, value: str) -> None:
    run(in_netns(netns, ["sysctl", "-qw", f"{key}={value}"]))
