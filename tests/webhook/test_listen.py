"""Where the webhook listens: by default on ``::`` with IPv4 too (dual-stack), so it serves on an
IPv6-only cluster as on an IPv4 one; ``0.0.0.0`` only where the kernel has no IPv6 (issue 25).

The real webhook process (uvicorn, TLS from a test CA) is called over both loopbacks, and (as root)
in a network namespace of its own whose loopback has no IPv4 address.
"""

from __future__ import annotations

import errno
import secrets
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from kubelab.ports import free_port
from lab.process import stop, wait_for
from webhook.certs import CertificateAuthority
from webhook.cli import config_from_args


@contextmanager
def webhook(tmp: Path, *args: str) -> Iterator[tuple[int, Path]]:
    """The real webhook with ``args`` (no ``--host`` unless given); its port and CA file."""
    files = CertificateAuthority(tmp / "pki").issue(hosts=("localhost", "127.0.0.1", "::1"))
    port = free_port()
    log = tmp / "webhook.log"
    cmd = [sys.executable, "-m", "webhook", "--port", str(port),
           "--tls-cert", str(files.cert), "--tls-key", str(files.key), *args]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(
            lambda: "Application startup complete" in log.read_text(),
            timeout=30,
            what="the webhook's startup",
            proc=proc,
            log=log.read_text,
        )
        yield port, files.ca
    finally:
        stop(proc, grace=10)


def healthz(host: str, port: int, ca: Path) -> int:
    context = ssl.create_default_context(cafile=ca)
    with httpx.Client(verify=context, timeout=10) as client:
        return client.get(f"https://{host}:{port}/healthz").status_code


def test_the_default_listen_address_is_ipv6_any() -> None:
    assert config_from_args(["--dev"]).host == "::"


def test_by_default_the_webhook_serves_on_the_ipv6_and_the_ipv4_loopback(tmp_path: Path) -> None:
    with webhook(tmp_path) as (port, ca):
        assert healthz("[::1]", port, ca) == 200
        assert healthz("127.0.0.1", port, ca) == 200


def test_an_explicit_ipv4_address_serves_ipv4_only(tmp_path: Path) -> None:
    with webhook(tmp_path, "--host", "127.0.0.1") as (port, ca):
        assert healthz("127.0.0.1", port, ca) == 200
        with pytest.raises(httpx.ConnectError):
            healthz("[::1]", port, ca)


def test_an_explicit_ipv6_loopback_serves_there(tmp_path: Path) -> None:
    with webhook(tmp_path, "--host", "::1") as (port, ca):
        assert healthz("[::1]", port, ca) == 200


def test_without_ipv6_in_the_kernel_the_default_falls_back_to_ipv4_any(monkeypatch: pytest.MonkeyPatch) -> None:
    """FAKE kernel without IPv6 (booted with ipv6.disable=1): an AF_INET6 socket cannot be made."""
    from webhook import server

    real = socket.socket

    def no_ipv6(family: int = socket.AF_INET, *args: object, **kwargs: object) -> socket.socket:
        if family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return real(family, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(server.socket, "socket", no_ipv6)
    sock = server.listen_socket("::", 0)
    try:
        assert sock.family == socket.AF_INET
        assert sock.getsockname()[0] == "0.0.0.0"
    finally:
        sock.close()


def test_the_default_socket_is_dual_stack() -> None:
    from webhook import server

    sock = server.listen_socket("::", 0)
    try:
        assert sock.family == socket.AF_INET6
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
    finally:
        sock.close()


_PROBE = """
import ssl, sys, time, urllib.request
port, ca = sys.argv[1], sys.argv[2]
context = ssl.create_default_context(cafile=ca)
deadline = time.monotonic() + 30
while True:
    try:
        with urllib.request.urlopen(f"https://[::1]:{port}/healthz", context=context, timeout=5) as reply:
            print(reply.status)
            break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.2)
"""


@pytest.fixture
def ipv6_only_netns() -> Iterator[str]:
    """A network namespace of our own whose loopback has ::1 and no IPv4 address: an IPv6-only host."""
    ns = f"bm-v6only-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", ns, "addr", "del", "127.0.0.1/8", "dev", "lo"], check=True)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)


@pytest.mark.root
def test_on_an_ipv6_only_host_the_default_serves_on_the_ipv6_loopback(tmp_path: Path, ipv6_only_netns: str) -> None:
    files = CertificateAuthority(tmp_path / "pki").issue(hosts=("localhost", "::1"))
    port = str(free_port())
    log = tmp_path / "webhook.log"
    netns = ["ip", "netns", "exec", ipv6_only_netns]
    cmd = [*netns, sys.executable, "-m", "webhook", "--port", port,
           "--tls-cert", str(files.cert), "--tls-key", str(files.key)]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        answer = subprocess.run(
            [*netns, sys.executable, "-c", _PROBE, port, str(files.ca)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert answer.stdout.strip() == "200", answer.stderr + log.read_text()
    finally:
        stop(proc, grace=10)
