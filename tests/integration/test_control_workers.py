"""Remote control of real ``celeriac worker`` processes on Redis (a private server), RabbitMQ and
SQLite: inspect, revoke (queued, and running with terminate on the processes pool), shutdown, the app's
own command, and messages a worker must survive."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac import states
from celeriac.control.mailbox import COMMANDS
from celeriac.protocol.message import Message
from tests.integration import appmod
from tests.integration.conftest import log_of, wait_until
from tests.servers import RedisServer, service_missing

pytestmark = pytest.mark.slow

AMQP = "amqp://guest:guest@127.0.0.1:5672//"


def _rabbit_up() -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture(params=["redis", "amqp", "sqlite"])
def worker_env(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_server: Callable[..., RedisServer],
) -> Iterator[dict[str, str]]:
    kind = request.param
    sqlite = f"sqlite:///{tmp_path}/control.sqlite3"
    if kind == "redis":
        url = redis_server().url()
        broker, backend = url, url
    elif kind == "amqp":
        if not _rabbit_up():
            service_missing("RabbitMQ is not answering on 127.0.0.1:5672")
        broker, backend = AMQP, "db+" + sqlite
    else:
        broker, backend = sqlite, "db+" + sqlite
    values = {
        "CELERIAC_BROKER_URL": broker,
        "CELERIAC_RESULT_BACKEND": backend,
        "CELERIAC_BROKER_LEASE_SECONDS": "2",
        # A queue of the test's own: RabbitMQ is shared with other tests.
        "CELERIAC_TASK_DEFAULT_QUEUE": f"ctl-{uuid.uuid4().hex[:10]}",
        "LEDGER_PATH": str(tmp_path / "ledger.txt"),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    yield {**os.environ, **values, "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def node() -> str:
    return f"ctl{uuid.uuid4().hex[:8]}"


def pinged(app: Any, name: str, timeout: float = 20.0) -> None:
    """Wait until the worker answers (its subscription may come a moment after it logged ready)."""
    assert wait_until(lambda: app.control.inspect([name], timeout=0.5).ping(), timeout)


def test_inspect_a_worker_process(app: Any, start_worker: Any, node: str) -> None:
    worker = start_worker("-P", "processes", "-c", "1", name=node)
    name = f"{node}@test"
    pinged(app, name)
    inspect = app.control.inspect([name])
    started = time.perf_counter()
    assert inspect.ping() == {name: {"ok": "pong"}}
    print(f"inspect ping round trip: {1000 * (time.perf_counter() - started):.1f} ms")
    registered = inspect.registered()[name]
    assert "tests.integration.appmod.add" in registered
    assert "tests.integration.appmod.hang [time_limit=1]" not in registered  # not an attribute shown
    assert inspect.request("answer", question="life") == {name: {"ok": "42 to life"}}
    result = appmod.work.delay(7, 30)
    assert wait_until(lambda: inspect.active()[name], 20), log_of(worker)
    [active] = inspect.active()[name]
    assert active["id"] == result.id and active["args"] == [7, 30]
    stats = inspect.stats()[name]
    assert stats["pool"]["processes"] == [active["worker_pid"]]
    assert active["worker_pid"] != stats["pid"] == worker.proc.pid
    assert stats["total"] == {"tests.integration.appmod.work": 1}
    replies = app.control.revoke(result.id, [name], terminate=True, reply=True)
    assert replies == [{name: {"ok": f"terminate: {result.id}"}}]
    assert wait_until(lambda: result.state == states.REVOKED, 10)
    assert appmod.add.delay(2, 3).get(timeout=20) == 5  # a new child serves
    assert inspect.active() == {name: []}


def test_revoked_queued_tasks_never_run_and_bad_commands_are_survived(
    app: Any, start_worker: Any, node: str, worker_env: dict[str, str]
) -> None:
    worker = start_worker("-P", "threads", "-c", "1", name=node)
    name = f"{node}@test"
    pinged(app, name)
    blocker = appmod.work.delay(1, 1.5)
    queued = appmod.work.delay(2)
    app.control.revoke(queued.id)
    assert blocker.get(timeout=20) == 1

    async def garbage() -> None:
        broker = app.broker()
        await broker.broadcast(COMMANDS, Message(body=b"{oops", headers={}))
        await broker.broadcast(COMMANDS, Message(body=b'{"method": 3}', headers={}))

    app.run(garbage())
    assert app.control.broadcast("no_such_cmd", destination=[name], reply=True) == [
        {name: {"error": "KeyError('no_such_cmd')"}}
    ]
    assert appmod.add.delay(1, 1).get(timeout=20) == 2
    assert queued.state == states.REVOKED
    assert "ignored an unreadable remote-control message" in log_of(worker)
    app.control.shutdown([name])
    assert worker.proc.wait(30) == 0


def test_pings_in_a_tight_loop_are_all_answered(
    app: Any, start_worker: Any, node: str, worker_env: dict[str, str]
) -> None:
    """A client pinging as fast as it can (a dashboard, a script, ``bench control``) never runs out of
    connections: on Redis, each call's reply reader used to hold one for a second after the call."""
    start_worker("-P", "threads", "-c", "1", name=node)
    name = f"{node}@test"
    pinged(app, name)
    took = []
    for _ in range(300):
        started = time.perf_counter()
        assert app.control.ping([name], timeout=5.0) == [{name: {"ok": "pong"}}]
        took.append(time.perf_counter() - started)
    took.sort()
    print(f"ping round trip p50 {1000 * took[150]:.1f} ms, p95 {1000 * took[285]:.1f} ms")
