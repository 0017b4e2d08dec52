"""RSA keys and self-signed certificates for the signing tests, made fresh with ``cryptography``.

Nothing is checked in: each test writes its own PEM files under its ``tmp_path``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Identity:
    """One signer's files: its private key and its certificate."""

    key: Path
    cert: Path


@cache
def _rsa_key(name: str) -> rsa.RSAPrivateKey:
    # 2048-bit keys take a noticeable moment to make; one per name per test session is enough.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_identity(
    folder: Path, name: str, *, expired: bool = False, password: bytes | None = None
) -> Identity:
    """Write ``<name>.key`` and ``<name>.pem`` (self-signed, CN=name) into ``folder``."""
    key = _rsa_key(name)
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "celeriac tests"),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])  # fmt: skip
    now = datetime.now(UTC)
    start, end = (
        (now - timedelta(days=30), now - timedelta(days=1)) if expired else (now, now + timedelta(days=1))
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(secrets.randbits(64))
        .not_valid_before(start - timedelta(minutes=5))
        .not_valid_after(end)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    key_path, cert_path = folder / f"{name}.key", folder / f"{name}.pem"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Identity(key_path, cert_path)


def signing_settings(folder: Path) -> dict[str, Any]:
    """The settings of an app signing as ``folder/alice`` and trusting ``folder/store``."""
    return {
        "task_serializer": "auth",
        "accept_content": ["auth"],
        "result_accept_content": ["json"],
        "security_key": str(folder / "alice.key"),
        "security_certificate": str(folder / "alice.pem"),
        "security_cert_store": str(folder / "store"),
    }
