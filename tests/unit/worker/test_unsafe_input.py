"""Input a worker must refuse without running or decoding it: pickle it does not accept, and task or
remote-control messages over ``task_message_max_bytes`` or nested too deeply."""

from __future__ import annotations

import logging
import pickle
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celeriac
from celeriac.control.mailbox import COMMANDS, command_message, read_reply
from celeriac.events.receiver import events_of
from celeriac.exceptions import MessageTooLarge
from celeriac.protocol.message import Message
from celeriac.protocol.serializers import MAX_DEPTH
from celeriac.testing import start_worker
from tests.unit.worker.test_events import eventually
from tests.unit.worker.test_worker import dead_letters

UNPICKLED: list[str] = []
LIMIT = 4096
#: Deeper than MAX_DEPTH, not as deep as Python's recursion limit: the explicit cap is what refuses it.
DEPTH = MAX_DEPTH + 100


def _side_effect(what: str) -> str:
    UNPICKLED.append(what)
    return what


class Trap:
    """Unpickling it calls ``_side_effect``: proof that a payload was (or was not) unpickled."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _side_effect, ("unpickled!",)


@pytest.fixture
def app() -> Iterator[Celeriac]:
    url = f"memory://unsafe-{uuid.uuid4().hex[:12]}"
    app = Celeriac("unsafe", broker=url, backend=url, task_message_max_bytes=LIMIT)

    @app.task(name="echo")
    def echo(x: Any) -> Any:
        return x

    UNPICKLED.clear()
    yield app
    app.close()


def publish(app: Celeriac, message: Message, *, broadcast: bool = False) -> None:
    async def put() -> None:
        broker = app.broker()
        await (broker.broadcast(COMMANDS, message) if broadcast else broker.publish("celery", message))

    app.run(put())


def task_message(body: bytes, content_type: str = "application/json") -> Message:
    task_id = str(uuid.uuid4())
    return Message(
        body=body,
        headers={"lang": "py", "task": "echo", "id": task_id},
        content_type=content_type,
        content_encoding="binary" if "pickle" in content_type or "python" in content_type else "utf-8",
        properties={"correlation_id": task_id},
    )


def test_pickle_oversized_and_deep_task_messages_are_dead_lettered_unread(app: Celeriac) -> None:
    publish(app, task_message(pickle.dumps(([Trap()], {}, {})), "application/x-python-serialize"))
    publish(app, task_message(b'[["' + b"x" * LIMIT + b'"], {}, {}]'))
    publish(app, task_message(b"[" * DEPTH + b"]" * DEPTH))
    with start_worker(app):
        eventually(lambda: len(dead_letters(app)) == 3)
        assert app.tasks["echo"].delay(1).get(timeout=10) == 1
    reasons = sorted(d.reason for d in dead_letters(app))
    assert reasons[0] == f"undecodable message: json data is nested too deeply (over {MAX_DEPTH} levels)"
    assert reasons[1].startswith("undecodable message: message body is ")
    assert f"over the task_message_max_bytes limit of {LIMIT} bytes" in reasons[1]
    assert "refusing to deserialize content of type 'application/x-python-serialize'" in reasons[2]
    assert UNPICKLED == []


def test_remote_control_refuses_pickle_oversized_and_deep_commands(
    app: Celeriac, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "celeriac")
    pickled = Message(
        body=pickle.dumps({"method": "ping", "arguments": {"x": Trap()}}),
        headers={},
        content_type="application/x-python-serialize",
    )
    big = command_message("ping", {"padding": "x" * LIMIT})
    deep = Message(
        body=b'{"method": "ping", "arguments": {"a": ' + b"[" * DEPTH + b"]" * DEPTH + b"}}", headers={}
    )
    with start_worker(app, hostname="w@unsafe") as worker:
        assert worker.control is not None
        eventually(worker.control.listening.is_set)
        for message in (pickled, big, deep):
            publish(app, message, broadcast=True)
        eventually(lambda: caplog.text.count("ignored an unreadable remote-control message") == 3)
        assert app.control.inspect(["w@unsafe"]).ping() == {"w@unsafe": {"ok": "pong"}}
    assert "not accepted" in caplog.text
    assert (
        f"remote-control command body is {len(big.body)} bytes, over the task_message_max_bytes"
        in caplog.text
    )
    assert "nested too deeply" in caplog.text
    assert UNPICKLED == []


def test_replies_and_events_over_the_limit_are_not_read(caplog: pytest.LogCaptureFixture) -> None:
    reply = Message(body=b'{"w@x": "' + b"x" * LIMIT + b'"}', headers={"ticket": "t"})
    with pytest.raises(MessageTooLarge, match="remote-control reply body is"):
        read_reply(reply, ["json"], LIMIT)
    assert read_reply(reply, ["json"], LIMIT * 2)[0] == "t"
    event = Message(body=b'{"type": "worker-heartbeat", "pad": "' + b"x" * LIMIT + b'"}', headers={})
    assert events_of(event, max_bytes=LIMIT) == []
    assert "skipped an event message of" in caplog.text
    assert [e["type"] for e in events_of(event)] == ["worker-heartbeat"]
