"""A small certificate authority for dev mode, the demo and the tests.

Production certificates come from cert-manager or the chart; this exists so a developer can
start the webhook with real TLS in one command and tests can verify it exactly as the
apiserver does (against a CA bundle).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CertFiles:
    ca: Path
    cert: Path
    key: Path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def subject_alt_names(hosts: tuple[str, ...] | list[str]) -> list[x509.GeneralName]:
    """SAN entries for host names and IP addresses alike."""
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    return sans


class CertificateAuthority:
    def __init__(self, directory: Path, *, days: int = 30) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.days = days
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bridge-migration local CA")])
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
        cert = (
            x509.CertificateBuilder()
            .subject_name(self._name)
            .issuer_name(self._name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(usage, critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_path = directory / "ca.crt"
        self.ca_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, *, hosts: tuple[str, ...] = ("localhost", "127.0.0.1"), name: str = "tls") -> CertFiles:
        """A server certificate for ``hosts`` (DNS names or IPs), written as <name>.crt/<name>.key."""
        key = ec.generate_private_key(ec.SECP256R1())
        sans = subject_alt_names(hosts)
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=self.days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        files = CertFiles(ca=self.ca_path, cert=self.directory / f"{name}.crt", key=self.directory / f"{name}.key")
        # Key first, then certificate: a watcher that sees the new certificate finds its key ready.
        files.key.write_bytes(_key_pem(key))
        files.key.chmod(0o600)
        files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return files
