"""Starting the real webhook process (uvicorn, TLS from a test CA) for integration tests, and a
hung API server for it to read from."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from kubelab.ports import free_port
from lab.process import stop, wait_for
from webhook.certs import CertFiles, CertificateAuthority


@dataclass
class RunningWebhook:
    url: str
    ca: CertificateAuthority
    files: CertFiles
    proc: subprocess.Popen[str]
    log: Path

    def client(self) -> httpx.Client:
        # Verify exactly as kube-apiserver does: against the CA bundle, hostname checked.
        return httpx.Client(base_url=self.url, verify=ssl.create_default_context(cafile=self.files.ca), timeout=10)


@contextmanager
def running_webhook(tmp: Path, *args: str) -> Iterator[RunningWebhook]:
    ca = CertificateAuthority(tmp / "pki")
    files = ca.issue(hosts=("localhost", "127.0.0.1"))
    port = free_port()
    log = tmp / "webhook.log"
    cmd = [sys.executable, "-m", "webhook", "--host", "127.0.0.1", "--port", str(port),
           "--tls-cert", str(files.cert), "--tls-key", str(files.key), *args]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
    hook = RunningWebhook(url=f"https://localhost:{port}", ca=ca, files=files, proc=proc, log=log)
    try:
        with hook.client() as client:
            wait_for(
                lambda: client.get("/readyz").status_code == 200,
                timeout=30,
                what="the webhook's /readyz",
                proc=proc,
                log=log.read_text,
                ignore=(httpx.TransportError,),
            )
        yield hook
    finally:
        stop(proc, grace=10)


@contextmanager
def hung_apiserver(tmp_path: Path) -> Iterator[tuple[Path, list[socket.socket]]]:
    """FAKE hung apiserver: accepts, never answers. Yields a kubeconfig pointing at it and the
    connections it accepted so far."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not done.is_set():
            try:
                conn, _ = listener.accept()
                held.append(conn)
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        f"""apiVersion: v1
kind: Config
clusters: [{{name: hung, cluster: {{server: "https://127.0.0.1:{port}", insecure-skip-tls-verify: true}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: c, context: {{cluster: hung, user: u}}}}]
current-context: c
"""
    )
    try:
        yield kubeconfig, held
    finally:
        done.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()
