"""``celeriac dead-letters``, run in this process on a memory broker: what it prints for letters whose
arguments cannot be decoded or whose message cannot be read, and purge's confirmation."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac.brokers import create_broker
from celeriac.cli.main import main
from celeriac.memory import broker as memory_broker
from celeriac.memory.testkit import MemoryBrokerKit
from celeriac.protocol.message import Message


@pytest.fixture
def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """A module whose app uses a memory broker of the test's own; (module name, broker URL)."""
    name, url = f"deadcli_{uuid.uuid4().hex[:8]}", f"memory://dead-cli-{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(f"from celeriac import Celery\napp = Celery('x', broker={url!r})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, url
    sys.modules.pop(name, None)
    memory_broker.reset(url)


def bury(url: str) -> None:
    """Dead-letter a message whose body is not JSON (id ``bad-body``), then bytes that are no envelope."""

    async def scenario() -> None:
        broker = create_broker(url)
        bad = Message(body=b"\x00 not json", headers={"task": "proj.add", "id": "bad-body", "lang": "py"})
        await broker.publish("celery", bad)
        await MemoryBrokerKit(url).put_raw(broker, "celery", b"\xff\xfe not an envelope")
        for got in await broker.fetch(["celery"], 2, 1.0):
            await broker.reject(got, requeue=False, reason=got.error or "undecodable: body is not JSON")

    asyncio.run(scenario())


def test_letters_that_cannot_be_decoded_are_shown_raw(
    app_module: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    name, url = app_module
    bury(url)
    assert main(["-A", name, "dead-letters", "list", "--json"]) == 0
    raw_letter, bad_body = json.loads(capsys.readouterr().out)
    assert bad_body["id"] == "bad-body" and bad_body["task"] == "proj.add"
    assert "invalid JSON" in bad_body["undecodable"] and bad_body["body"] == "\x00 not json"
    assert raw_letter["id"] is None and raw_letter["headers"] is None
    assert raw_letter["raw"] == "base64:" + base64.b64encode(b"\xff\xfe not an envelope").decode()
    assert raw_letter["undecodable"] == "the broker could not read the stored message"

    assert main(["-A", name, "dead-letters", "show", "bad-body"]) == 0
    shown = capsys.readouterr().out
    assert "body:   not decodable (DecodeError: invalid JSON" in shown and '  task: "proj.add"' in shown
    assert "bytes:  \x00 not json" in shown

    assert main(["-A", name, "dead-letters", "list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split()[2:5] == ["celery", "-", "-"]  # no task name, no id: the message cannot be read


def test_purge_asks_first(
    app_module: tuple[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, url = app_module
    bury(url)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    answers = iter(["n", "yes"])
    asked: list[str] = []
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or next(answers))
    assert main(["-A", name, "dead-letters", "purge", "--older-than", "0", "--keep", "1"]) == 1
    assert asked == ["Delete the dead letters older than 0 s or beyond the newest 1? [y/N] "]
    assert main(["-A", name, "dead-letters", "purge", "--queue", "celery"]) == 0
    assert asked[1] == "Delete every dead letter of queue 'celery'? [y/N] "
    assert "deleted 2 dead letter(s)" in capsys.readouterr().out
