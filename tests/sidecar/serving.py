"""Run `python -m sidecar serve` as a real process on loopback, for tests and the lab."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx

from kubelab.ports import free_port
from lab.process import stop, wait_for

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


class SidecarProcess:
    def __init__(
        self,
        *,
        libvirt_uri: str,
        tmp: Path,
        domain: str | None = None,
        hook_dir: Path | None = None,
        annotations: Path | None = None,
        extra: list[str] | None = None,
        netns: str | None = None,
        listen_host: str = "127.0.0.1",
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"sidecar-{self.port}.log"
        argv = [
            sys.executable,
            "-m",
            "sidecar",
            "serve",
            "--libvirt-uri",
            libvirt_uri,
            "--listen",
            f"{listen_host}:{self.port}",
            "--hook-socket-dir",
            str(hook_dir or tmp / "no-hook-dir"),
            "--pod-annotations",
            str(annotations or tmp / "no-annotations"),
            "--link-pause-ms",
            "100",
            *(["--domain", domain] if domain else []),
            *(extra or []),
        ]
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        self._log = self.log_path.open("wb")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        self.client = httpx.Client(base_url=self.url, timeout=120)

    def wait_ready(self, timeout: float = 30.0) -> None:
        def answers() -> bool:
            self.client.get("/v1/status")  # any answer: it is listening
            return True

        wait_for(
            answers,
            timeout=timeout,
            what=f"the sidecar listening on {self.url}",
            proc=self.proc,
            log=self.log,
            ignore=(httpx.TransportError,),
        )

    def wait_for(self, predicate: Callable[[], T], *, timeout: float, what: str) -> T:
        """lab.process.wait_for with this sidecar's log in the error."""
        return wait_for(predicate, timeout=timeout, what=what, log=self.log)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> int:
        self.client.close()
        code = stop(self.proc, grace=10)
        self._log.close()
        return code
