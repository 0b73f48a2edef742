"""The one certificate authority of the project's throw-away TLS: the webhook's dev mode, demo,
tests and benchmarks, and kubelab's local control plane (kubelab may import this; not the reverse).

Production certificates come from cert-manager or the chart; this exists so a developer can start
the webhook with real TLS in one command and tests can verify it exactly as the apiserver does
(against a CA bundle). EC P-256 everywhere: fast to generate, accepted by kube-apiserver and Go's TLS.
The CA's own key stays in memory; only its certificate is written.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Backdated a little, so a clock a few minutes behind still accepts a certificate made just now.
_BACKDATE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class CertFiles:
    ca: Path
    cert: Path
    key: Path


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by its owner only, from the first byte on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    path.chmod(0o600)  # an existing file keeps its mode through os.open


def subject_alt_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """SAN entries for host names and IP addresses alike."""
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    return sans


class CertificateAuthority:
    """A CA whose certificate is ``<directory>/ca.crt``; it issues leaf certificates into the same
    directory as ``<name>.crt``/``<name>.key``."""

    def __init__(self, directory: Path, *, common_name: str = "bridge-migration local CA", days: int = 30) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.days = days
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = dt.datetime.now(dt.UTC)
        usage = x509.KeyUsage(
            digital_signature=True,
            key_cert_sign=True,
            crl_sign=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            encipher_only=False,
            decipher_only=False,
        )
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(self._name)
            .issuer_name(self._name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_path = directory / "ca.crt"
        self.ca_path.write_bytes(self.pem)

    @property
    def pem(self) -> bytes:
        """The CA certificate, PEM: the bundle a client verifies against."""
        return self._cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        name: str = "tls",
        *,
        hosts: Sequence[str] = ("localhost", "127.0.0.1"),
        common_name: str | None = None,
    ) -> CertFiles:
        """A serving certificate for ``hosts`` (DNS names or IPs); its common name is the first host
        unless given."""
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name or hosts[0])])
        return self._issue(name, subject, usage=ExtendedKeyUsageOID.SERVER_AUTH, hosts=hosts)

    def issue_client(self, name: str, *, common_name: str, organizations: Sequence[str] = ()) -> CertFiles:
        """A client certificate; kube-apiserver reads the user from the common name and the groups
        from the organizations."""
        orgs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
        subject = x509.Name([*orgs, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        return self._issue(name, subject, usage=ExtendedKeyUsageOID.CLIENT_AUTH, hosts=())

    def _issue(self, name: str, subject: x509.Name, *, usage: x509.ObjectIdentifier, hosts: Sequence[str]) -> CertFiles:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + dt.timedelta(days=self.days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )
        if hosts:
            builder = builder.add_extension(x509.SubjectAlternativeName(subject_alt_names(hosts)), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        files = CertFiles(ca=self.ca_path, cert=self.directory / f"{name}.crt", key=self.directory / f"{name}.key")
        # Key first, then certificate: a watcher that sees the new certificate finds its key ready.
        write_private(files.key, private_key_pem(key))
        files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return files
