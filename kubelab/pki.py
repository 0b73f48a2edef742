"""The service-account signing key of the local control plane.

Its certificates (kube-apiserver's serving one, the admin client) come from webhook.certs, the
project's one throw-away CA. EC P-256: kube-apiserver accepts it for service-account tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from webhook.certs import private_key_pem, write_private


@dataclass(frozen=True)
class SigningKey:
    public: Path
    private: Path


def write_signing_key(directory: Path, name: str) -> SigningKey:
    """A bare key pair (``<name>.key``/``<name>.pub``): the service-account token signing key."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    files = SigningKey(public=directory / f"{name}.pub", private=directory / f"{name}.key")
    write_private(files.private, private_key_pem(key))
    files.public.write_bytes(public)
    return files
