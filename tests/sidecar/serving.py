"""Run `python -m sidecar serve` as a real process on loopback, for tests and the lab."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from kubelab.ports import free_port

REPO = Path(__file__).resolve().parents[2]


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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sidecar exited {self.proc.returncode}:\n{self.log()}")
            try:
                self.client.get("/v1/status")
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise TimeoutError(f"sidecar not listening on {self.url}:\n{self.log()}")

    def wait_for(self, predicate: Any, *, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"{what} did not happen within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> int:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return int(self.proc.returncode)
