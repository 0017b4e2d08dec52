"""Message signing: the ``auth`` serializer, on the wire as Celery's ``app.setup_security()`` writes it.

A signed body is the base64 text of five pieces joined by the bytes ``00 01``: the signer's id
(base64), the signature (base64), the inner content type, the inner content encoding, and the inner
body itself, which is what is signed (RSA-PSS, MGF1 and the maximum salt length, over
``security_digest``). The signer's id is the certificate's issuer values joined by spaces, a space, and
its serial number, so a store is keyed the way Celery keys it. The content type is ``application/data``.

Reading verifies first: an unknown or expired certificate, a bad signature or a malformed envelope
raises ``SecurityError`` before the inner body is handed to any deserializer, and the inner content
type must be one of the allowed serializers (``json`` unless told otherwise).
"""

from __future__ import annotations

import base64
import binascii
import glob
import os
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from celeriac.exceptions import ContentDisallowed, ImproperlyConfigured, SecurityError
from celeriac.protocol import serializers

__all__ = ["CONTENT_TYPE", "Signer", "certificate_id", "digest_named", "load_key", "load_store"]

CONTENT_TYPE = "application/data"
_SEPARATOR = b"\x00\x01"


def certificate_id(cert: x509.Certificate) -> str:
    """The id a signed message names its signer by: issuer values, then the serial number."""
    issuer = " ".join(str(attribute.value) for attribute in cert.issuer)
    return f"{issuer} {cert.serial_number}"


def _expired(cert: x509.Certificate) -> bool:
    return datetime.now(UTC) >= cert.not_valid_after_utc


def _load_certificate(pem: bytes, where: str) -> x509.Certificate:
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{where} is not a PEM X.509 certificate: {exc}") from None
    if not isinstance(cert.public_key(), rsa.RSAPublicKey):
        raise ImproperlyConfigured(f"{where}: only RSA certificates can sign (as in Celery)")
    return cert


def load_store(path: str) -> dict[str, x509.Certificate]:
    """The certificates of ``security_cert_store``: every file of a directory, or of a glob pattern.

    Raises:
        ImproperlyConfigured: no file matches, a file is not an RSA certificate, one has expired, or
            two share an id.
    """
    pattern = os.path.join(path, "*") if os.path.isdir(path) else path
    store: dict[str, x509.Certificate] = {}
    for file in sorted(glob.glob(pattern)):
        with open(file, "rb") as handle:
            cert = _load_certificate(handle.read(), f"security_cert_store file {file}")
        name = certificate_id(cert)
        if _expired(cert):
            raise ImproperlyConfigured(f"security_cert_store file {file}: certificate {name!r} has expired")
        if name in store:
            raise ImproperlyConfigured(f"security_cert_store file {file}: a second certificate {name!r}")
        store[name] = cert
    if not store:
        raise ImproperlyConfigured(f"security_cert_store {path!r} holds no certificate file")
    return store


def digest_named(name: str) -> hashes.HashAlgorithm:
    """The hash ``security_digest`` names (``sha256``, ``sha512``, ...)."""
    algorithm = getattr(hashes, name.upper(), None)
    if not (isinstance(algorithm, type) and issubclass(algorithm, hashes.HashAlgorithm)):
        raise ImproperlyConfigured(f"security_digest {name!r} is not a hash; use sha256, sha384 or sha512")
    try:
        return algorithm()
    except TypeError:  # the SHAKE family wants a digest size: not one Celery can use either
        raise ImproperlyConfigured(f"security_digest {name!r} needs a size; use sha256 or sha512") from None


def load_key(pem: bytes, password: str | bytes | None) -> rsa.RSAPrivateKey:
    """The RSA private key of ``security_key``, unlocked with ``security_key_password``."""
    secret = password.encode("utf-8") if isinstance(password, str) else password
    try:
        key = serialization.load_pem_private_key(pem, password=secret)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ImproperlyConfigured(f"security_key cannot be loaded: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ImproperlyConfigured("security_key: only RSA keys can sign (as in Celery)")
    return key


@dataclass(frozen=True, slots=True)
class Signer:
    """Signs what this process sends with ``key`` and verifies what it reads against ``store``."""

    key: rsa.RSAPrivateKey
    certificate: x509.Certificate
    store: dict[str, x509.Certificate]
    digest: hashes.HashAlgorithm
    serializer: str = "json"
    allowed: Collection[str] = ("json",)

    def _padding(self) -> padding.PSS:
        return padding.PSS(mgf=padding.MGF1(self.digest), salt_length=padding.PSS.MAX_LENGTH)

    def dumps(self, value: Any) -> bytes:
        """``value`` written by the inner serializer, signed, and packed as Celery packs it."""
        content_type, body = serializers.dumps(value, self.serializer)
        signature = self.key.sign(body, self._padding(), self.digest)
        pieces = [
            base64.b64encode(certificate_id(self.certificate).encode("utf-8")),
            base64.b64encode(signature),
            content_type.encode("utf-8"),
            serializers.content_encoding_of(self.serializer).encode("utf-8"),
            body,
        ]
        return base64.b64encode(_SEPARATOR.join(pieces))

    def loads(self, data: bytes) -> Any:
        """The value a signed body carries, once its signature is verified.

        Raises:
            SecurityError: the envelope is malformed, the certificate is unknown or expired, the
                signature does not match, or the inner content type is not allowed.
        """
        signer, signature, content_type, body = _unpack(data)
        cert = self.store.get(signer)
        if cert is None:
            known = "; ".join(sorted(self.store))
            raise SecurityError(f"signed by an unknown certificate {signer!r} (trusted: {known})")
        if _expired(cert):
            raise SecurityError(
                f"signed by certificate {signer!r}, which expired at {cert.not_valid_after_utc.isoformat()}"
            )
        public_key = cert.public_key()
        assert isinstance(public_key, rsa.RSAPublicKey)  # the store only holds RSA certificates
        try:
            public_key.verify(signature, body, self._padding(), self.digest)
        except InvalidSignature:
            raise SecurityError(
                f"bad signature: the body does not match the signature of {signer!r} "
                f"(tampered, or signed with another digest than {self.digest.name})"
            ) from None
        try:
            return serializers.loads(body, content_type, self.allowed)
        except SecurityError:
            raise
        except ContentDisallowed as exc:
            raise SecurityError(f"signed body: {exc.reason}") from None


def _unpack(data: bytes) -> tuple[str, bytes, str, bytes]:
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise SecurityError("signed message is not base64 text (is the sender signing?)") from None
    pieces = raw.split(_SEPARATOR, 4)
    if len(pieces) != 5:
        raise SecurityError(f"signed message has {len(pieces)} of its 5 pieces (signer, signature, ...)")
    try:
        signer = base64.b64decode(pieces[0], validate=True).decode("utf-8")
        signature = base64.b64decode(pieces[1], validate=True)
        content_type = pieces[2].decode("ascii")
    except (binascii.Error, ValueError):
        raise SecurityError("signed message's signer, signature or content type is malformed") from None
    return signer, signature, content_type, pieces[4]


_SETTING_MISSING = (
    "signing needs task_serializer = 'auth' and accept_content = ['auth'] (only signed task messages "
    "are run; there is no point in signing what is not verified); set both before setup_security()"
)


def setup(
    conf: Any,
    allowed_serializers: Collection[str] | None = None,
    key: str | None = None,
    key_password: str | bytes | None = None,
    cert: str | None = None,
    store: str | None = None,
    digest: str | None = None,
    serializer: str = "json",
) -> Signer:
    """Check the settings as Celery's ``setup_security`` does, load the files, and put the signer
    behind the ``auth`` serializer of this process.

    Raises:
        ImproperlyConfigured: a setting is missing or inconsistent, or a file cannot be loaded.
    """
    accepted = list(conf.accept_content)
    if conf.task_serializer != "auth" or accepted != ["auth"]:
        raise ImproperlyConfigured(
            f"{_SETTING_MISSING} (now: task_serializer={conf.task_serializer!r}, accept_content={accepted!r})"
        )
    key = key or conf.security_key
    cert = cert or conf.security_certificate
    store = store or conf.security_cert_store
    missing = [
        name for name, value in (("key", key), ("certificate", cert), ("cert_store", store)) if not value
    ]
    if missing:
        named = ", ".join(f"security_{name}" for name in missing)
        raise ImproperlyConfigured(
            f"signing needs the settings security_key, security_certificate and "
            f"security_cert_store; missing: {named}"
        )
    assert key is not None and cert is not None and store is not None
    allowed = list(allowed_serializers) if allowed_serializers is not None else ["json"]
    for name in (*allowed, serializer):
        serializers.content_type_of(name)  # an unknown name fails here, not on the first message
    signer = Signer(
        key=load_key(_read(key, "security_key"), key_password or conf.security_key_password),
        certificate=_load_certificate(_read(cert, "security_certificate"), f"security_certificate {cert}"),
        store=load_store(store),
        digest=digest_named(digest or conf.security_digest or "sha256"),
        serializer=serializer,
        allowed=allowed,
    )
    serializers.register("auth", CONTENT_TYPE, signer.dumps, signer.loads)
    return signer


def _read(path: str, setting: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise ImproperlyConfigured(f"{setting} {path!r} cannot be read: {exc.strerror}") from None
