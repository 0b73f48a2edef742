"""The one throw-away CA (webhook dev mode, demo, tests, kubelab): what a TLS client checks of it."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from webhook.certs import CertFiles, CertificateAuthority


def handshake(files: CertFiles, *, host: str, client: CertFiles | None = None) -> x509.Certificate:
    """A TLS handshake on loopback, the client verifying strictly (as Python 3.13's default context
    does) and, with ``client``, the server asking for a client certificate as kube-apiserver does.
    Returns the client certificate the server saw, or the server's."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(files.cert, files.key)
    if client is not None:
        server_ctx.verify_mode = ssl.CERT_REQUIRED
        server_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
        server_ctx.load_verify_locations(files.ca)
    client_ctx = ssl.create_default_context(cafile=str(files.ca))
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    if client is not None:
        client_ctx.load_cert_chain(client.cert, client.key)
    seen: list[bytes] = []
    errors: list[BaseException] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    peer = tls.getpeercert(binary_form=True)
                    if peer:
                        seen.append(peer)
                    tls.sendall(b"x")
            except (ssl.SSLError, OSError) as exc:
                errors.append(exc)

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with (
                socket.create_connection(listener.getsockname()) as raw,
                client_ctx.wrap_socket(raw, server_hostname=host) as tls,
            ):
                tls.recv(1)
                der = tls.getpeercert(binary_form=True)
        finally:
            thread.join()
    assert errors == []
    assert der is not None
    return x509.load_der_x509_certificate(seen[0] if client is not None else der)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_a_serving_certificate_passes_strict_verification_by_name_and_by_ip(tmp_path: Path, host: str) -> None:
    files = CertificateAuthority(tmp_path).issue(hosts=("localhost", "127.0.0.1"))
    served = handshake(files, host=host)
    assert served.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "localhost"


def test_a_serving_certificate_is_refused_for_a_host_it_does_not_name(tmp_path: Path) -> None:
    files = CertificateAuthority(tmp_path).issue(hosts=("localhost",))
    with pytest.raises(ssl.SSLCertVerificationError, match=r"127\.0\.0\.1"):
        handshake(files, host="127.0.0.1")


def test_a_client_certificate_carries_user_and_groups_to_a_server_that_asks(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path, common_name="kubelab-ca", days=2)
    client = ca.issue_client("admin", common_name="kubelab-admin", organizations=("system:masters",))
    serving = ca.issue("apiserver", hosts=("127.0.0.1",), common_name="kube-apiserver")
    seen = handshake(serving, host="127.0.0.1", client=client)
    assert seen.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "kubelab-admin"
    assert [a.value for a in seen.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ["system:masters"]


def test_keys_are_readable_by_their_owner_only_and_the_ca_key_is_not_written(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path)
    files = ca.issue()
    client = ca.issue_client("admin", common_name="someone")
    assert {p.name for p in tmp_path.iterdir()} == {"ca.crt", "tls.crt", "tls.key", "admin.crt", "admin.key"}
    for key in (files.key, client.key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert ca.ca_path.read_bytes() == ca.pem
