"""What an ``sqs://`` URL and its transport options say, and how bodies are read (no server needed)."""

from __future__ import annotations

import base64

import pytest

from celeriac.exceptions import ConfigurationError
from celeriac.sqs import _wire
from celeriac.sqs._settings import Settings, queue_name


def test_settings_from_the_url_and_options() -> None:
    settings = Settings.read("sqs://AK%2FI:se%2Bcret@localhost:4566", {"region": "eu-west-1"})
    assert (settings.credentials.key, settings.credentials.secret) == ("AK/I", "se+cret")
    assert settings.endpoint_url == "http://localhost:4566" and settings.region == "eu-west-1"
    secure = Settings.read("sqs://localhost", {"is_secure": True})
    assert secure.endpoint_url == "https://localhost" and secure.credentials.key is None
    chain = Settings.read("sqs://", {"endpoint_url": "http://127.0.0.1:9"})
    assert chain.endpoint_url == "http://127.0.0.1:9" and chain.credentials.key is None
    assert queue_name("my.queue:x", "dev-") == "dev-my-queue_x"
    assert queue_name("a.b.fifo") == "a-b.fifo"
    with pytest.raises(ConfigurationError, match="80"):
        queue_name("q", "p" * 80)
    with pytest.raises(ConfigurationError, match=r"both end in \.fifo"):
        Settings.read("sqs://", {"predefined_queues": {"a.fifo": {"url": "http://x/a"}}})
    with pytest.raises(ConfigurationError, match="lease_seconds"):
        Settings.read("sqs://", {"lease_seconds": "soon"})
    with pytest.raises(ConfigurationError, match="starts with sqs://"):
        Settings.read("redis://localhost", {})
    assert Settings.read("sqs://", {}).lease_visibility == 30
    assert Settings.read("sqs://", {"lease_seconds": 0.5}).lease_visibility == 1


def test_bodies_are_read_as_kombu_writes_them() -> None:
    envelope = b'{"body": "", "headers": {}}'
    assert _wire.decode_body(base64.b64encode(envelope).decode()) == envelope
    assert _wire.decode_body(envelope.decode()) == envelope  # sqs_base64_encoding=False
    assert _wire.decode_body(base64.b64encode(b"\xff").decode()) == b"\xff"
    assert _wire.decode_body("not base64!") == b"not base64!"
    assert _wire.text_size("abc", {"n": _wire.attribute(1.0)}) == 3 + 1 + len("Number") + len("1.0")
