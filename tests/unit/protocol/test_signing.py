"""Message signing: the ``auth`` serializer, its settings, and its wire format beside Celery's own."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.security.certificate import Certificate, FSCertStore  # type: ignore[import-untyped]
from celery.security.key import PrivateKey  # type: ignore[import-untyped]
from celery.security.serialization import SecureSerializer  # type: ignore[import-untyped]
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from celeriac import Celeriac
from celeriac.exceptions import ImproperlyConfigured, SecurityError
from celeriac.protocol import decode_task, encode_task, serializers
from celeriac.protocol.message import TaskCall
from celeriac.protocol.signing import Signer, certificate_id
from tests.signing_keys import Identity, make_identity

AUTH = "application/data"


@pytest.fixture(autouse=True)
def restore_auth() -> Iterator[None]:
    """setup_security swaps the process-wide ``auth`` serializer; put the unset one back."""
    saved = serializers._by_name["auth"]
    yield
    serializers.register("auth", saved.content_type, saved.dumps, saved.loads)


@pytest.fixture
def alice(tmp_path: Path) -> Identity:
    return make_identity(tmp_path / "alice", "alice")


@pytest.fixture
def store(tmp_path: Path, alice: Identity) -> Path:
    folder = tmp_path / "store"
    folder.mkdir()
    (folder / "alice.pem").write_bytes(alice.cert.read_bytes())
    return folder


def signing_app(alice: Identity, store: Path, **settings: Any) -> Celeriac:
    defaults: dict[str, Any] = {
        "task_serializer": "auth",
        "accept_content": ["auth"],
        "security_key": str(alice.key),
        "security_certificate": str(alice.cert),
        "security_cert_store": str(store),
    }
    app = Celeriac("signing", broker="memory://signing", **(defaults | settings))
    app.setup_security()
    return app


def celery_serializer(identity: Identity, store: Path) -> Any:
    return SecureSerializer(
        PrivateKey(identity.key.read_text()),
        Certificate(identity.cert.read_text()),
        FSCertStore(str(store)),
        "sha256",
    )


def test_signed_round_trip_and_the_message_says_application_data(alice: Identity, store: Path) -> None:
    signing_app(alice, store)
    message = encode_task(TaskCall(id="t1", name="add", args=[1, 2], kwargs={"z": 3}), serializer="auth")
    assert message.content_type == AUTH
    assert message.content_encoding == "utf-8"
    call = decode_task(message, accept=["auth"])
    assert (call.args, call.kwargs) == ([1, 2], {"z": 3})


def test_celery_reads_what_we_sign_and_we_read_what_celery_signs(alice: Identity, store: Path) -> None:
    signing_app(alice, store)
    celery = celery_serializer(alice, store)
    value = [[1, "two"], {"three": 3.0}, {"callbacks": None}]
    ours = serializers.dumps(value, "auth")[1]
    assert celery.deserialize(ours.decode("ascii")) == value
    theirs = celery.serialize(value)
    assert serializers.loads(theirs.encode("ascii"), AUTH, ["auth"]) == value


def tampered(signed: bytes, old: bytes, new: bytes) -> bytes:
    raw = base64.b64decode(signed)
    assert old in raw
    return base64.b64encode(raw.replace(old, new))


def test_a_tampered_body_is_refused_before_it_is_decoded(alice: Identity, store: Path) -> None:
    signing_app(alice, store)
    signed = serializers.dumps({"amount": 10}, "auth")[1]
    with pytest.raises(SecurityError, match="bad signature"):
        serializers.loads(tampered(signed, b"10", b"99"), AUTH, ["auth"])
    # A tampered body that is not even JSON fails on the signature, not in a decoder.
    with pytest.raises(SecurityError, match="bad signature"):
        serializers.loads(tampered(signed, b'{"amount":10}', b"\xff{[not json"), AUTH, ["auth"])


def test_a_message_from_an_unknown_certificate_is_refused(
    tmp_path: Path, alice: Identity, store: Path
) -> None:
    mallory = make_identity(tmp_path / "mallory", "mallory")
    signing_app(alice, store)
    forged = celery_serializer(mallory, mallory.cert).serialize({"amount": 10})
    with pytest.raises(SecurityError, match="unknown certificate 'celeriac tests mallory "):
        serializers.loads(forged.encode("ascii"), AUTH, ["auth"])


def test_an_expired_certificate_is_refused_when_loading_the_store(tmp_path: Path, alice: Identity) -> None:
    old = make_identity(tmp_path / "old", "old", expired=True)
    with pytest.raises(ImproperlyConfigured, match=r"'celeriac tests old .*' has expired"):
        signing_app(alice, old.cert)


def test_a_signed_inner_pickle_is_refused_unless_allowed(alice: Identity, store: Path) -> None:
    signing_app(alice, store)
    celery = SecureSerializer(
        PrivateKey(alice.key.read_text()), Certificate(alice.cert.read_text()), None, "sha256", "pickle"
    )
    signed = celery.serialize({"a": 1}).encode("ascii")
    with pytest.raises(SecurityError, match=r"application/x-python-serialize.*not accepted"):
        serializers.loads(signed, AUTH, ["auth"])


def test_malformed_envelopes_are_security_errors(alice: Identity, store: Path) -> None:
    signing_app(alice, store)
    for data, reason in [
        (b"{not base64}", "not base64"),
        (base64.b64encode(b"a\x00\x01b"), "2 of its 5 pieces"),
    ]:
        with pytest.raises(SecurityError, match=reason):
            serializers.loads(data, AUTH, ["auth"])


def test_auth_before_setup_security_is_refused_with_what_to_do() -> None:
    with pytest.raises(SecurityError, match=r"call app.setup_security\(\)"):
        serializers.loads(b"abc", AUTH, ["auth"])


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"task_serializer": "json"}, "task_serializer = 'auth' and accept_content = \\['auth'\\]"),
        ({"accept_content": ["auth", "json"]}, "accept_content = \\['auth'\\]"),
        ({"security_certificate": None}, "missing: security_certificate"),
        ({"security_digest": "md55"}, "security_digest 'md55' is not a hash"),
        ({"security_key": "/nonexistent/key.pem"}, "security_key '/nonexistent/key.pem' cannot be read"),
    ],
)
def test_bad_settings_are_named(alice: Identity, store: Path, settings: dict[str, Any], reason: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=reason):
        signing_app(alice, store, **settings)


def test_a_key_with_a_password(tmp_path: Path) -> None:
    locked = make_identity(tmp_path / "locked", "alice", password=b"s3cret")
    with pytest.raises(ImproperlyConfigured, match="security_key cannot be loaded"):
        signing_app(locked, locked.cert)
    signing_app(locked, locked.cert, security_key_password="s3cret")
    assert serializers.loads(serializers.dumps([1], "auth")[1], AUTH, ["auth"]) == [1]


def test_a_certificate_that_expired_after_loading_is_refused(tmp_path: Path, alice: Identity) -> None:
    # The store refuses an expired file at setup; one that expires while the worker runs is refused
    # per message. A signer built directly stands for a store loaded before the expiry.
    old = make_identity(tmp_path / "old", "old", expired=True)
    cert = x509.load_pem_x509_certificate(old.cert.read_bytes())
    key = serialization.load_pem_private_key(old.key.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    signer = Signer(key=key, certificate=cert, store={certificate_id(cert): cert}, digest=hashes.SHA256())
    with pytest.raises(
        SecurityError, match=r"signed by certificate 'celeriac tests old \d+', which expired at"
    ):
        signer.loads(signer.dumps([1]))
