"""The project's webhook as a real HTTPS subprocess (``python -m webhook``) on loopback."""

from __future__ import annotations

import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from kubelab.ports import LOOPBACK, free_port, log_tail
from kubelab.tools import REPO_ROOT
from lab.process import stop, wait_for
from webhook.certs import CertFiles, CertificateAuthority

_START_TIMEOUT_S = 60.0


class WebhookProcess:
    """``python -m webhook`` with a certificate from ``ca``; ``options`` are its long flags.

    The port is fixed at construction so a restart (other flags, or after a deliberate stop) keeps
    the URL the API server's webhook configurations point at.
    """

    def __init__(
        self, *, ca: CertificateAuthority, workdir: Path, options: Mapping[str, str], port: int | None = None
    ) -> None:
        self.ca = ca
        self.workdir = workdir
        self.options = dict(options)
        self.port = port or free_port()
        self.log_path = workdir / "webhook.log"
        self._serving: CertFiles = ca.issue("webhook", common_name="bridge-migration-webhook", hosts=(LOOPBACK,))
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://{LOOPBACK}:{self.port}"

    def argv(self) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "webhook",
            f"--host={LOOPBACK}",
            f"--port={self.port}",
            f"--tls-cert={self._serving.cert}",
            f"--tls-key={self._serving.key}",
        ]
        argv += [f"--{flag}={value}" for flag, value in self.options.items()]
        return argv

    def start(self, **overrides: str) -> None:
        """Start with the constructor's options, each flag in ``overrides`` (``mac_policy=...``) replaced."""
        if self._proc is not None:
            raise RuntimeError("webhook already running")
        self.options.update({flag.replace("_", "-"): value for flag, value in overrides.items()})
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            self.argv(), cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        wait_for(
            self._ready,
            timeout=_START_TIMEOUT_S,
            interval=0.2,
            what="webhook",
            proc=self._proc,
            log=lambda: log_tail(self.log_path),
        )

    def stop(self) -> None:
        if self._proc is not None:
            stop(self._proc, grace=20)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self, **overrides: str) -> None:
        self.stop()
        self.start(**overrides)

    def _ready(self) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.ca.ca_path))
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=3, context=ctx) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
