"""Events of an in-process worker on the memory broker: Celery's types and fields, task events only with
``task_events`` (or once enabled at run time), worker events always, batches as ``task.multi``."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from celeriac import Celeriac
from celeriac.events.receiver import receive
from celeriac.exceptions import Reject
from celeriac.testing import start_worker

COMMON = {"hostname", "utcoffset", "pid", "clock", "timestamp", "type", "local_received"}


@pytest.fixture
def app(request: pytest.FixtureRequest) -> Iterator[Celeriac]:
    url = f"memory://events-{request.node.name}"
    app = Celeriac("events", broker=url, backend=url)

    @app.task(name="add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="boom")
    def boom() -> None:
        raise ValueError("boom")

    @app.task(name="again", bind=True, max_retries=1, default_retry_delay=0)
    def again(self: Any) -> None:
        if self.request.retries < 1:
            raise self.retry(exc=KeyError("once more"))

    @app.task(name="refuse")
    def refuse() -> None:
        raise Reject("no thanks", requeue=False)

    yield app
    app.close()


class Listener:
    """Collects the events broadcast on an app's broker, on a loop of its own, for the ``with`` block."""

    def __init__(self, app: Celeriac, pattern: str = "#") -> None:
        self.app, self.pattern = app, pattern
        self.events: list[dict[str, Any]] = []
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._listen()), daemon=True)

    async def _listen(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        broker = self.app.broker()
        async with receive(broker, self.pattern) as events:
            self._ready.set()
            reading = asyncio.ensure_future(self._read(events))
            await self._stop.wait()
            reading.cancel()
        await self.app.aclose()

    async def _read(self, events: Any) -> None:
        async for event in events:
            self.events.append(event)

    def __enter__(self) -> Listener:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def of(self, event_type: str, **match: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in list(self.events)
            if e["type"] == event_type and all(e.get(k) == v for k, v in match.items())
        ]

    def wait_for(self, event_type: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        eventually(lambda: bool(self.of(event_type, **match)), timeout)
        return self.of(event_type, **match)[0]


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_task_events_carry_celerys_fields_in_order(app: Celeriac) -> None:
    with Listener(app) as seen, start_worker(app, hostname="w1@events", task_events=True) as worker:
        result = app.send_task("add", [2, 3])
        assert result.get(timeout=10) == 5
        done = seen.wait_for("task-succeeded", uuid=result.id)
        received = seen.wait_for("task-received", uuid=result.id)
        started = seen.wait_for("task-started", uuid=result.id)
        online = seen.wait_for("worker-online", hostname="w1@events")
    assert set(received) == COMMON | {
        "uuid", "name", "args", "kwargs", "root_id", "parent_id", "retries", "eta", "expires",
    }  # fmt: skip
    assert (received["name"], received["args"], received["kwargs"], received["retries"]) == (
        "add",
        "(2, 3)",
        "{}",
        0,
    )
    assert received["root_id"] == result.id and received["eta"] is None
    assert set(started) == COMMON | {"uuid"}
    assert done["result"] == "5" and isinstance(done["runtime"], float) and done["runtime"] >= 0
    assert received["clock"] < started["clock"] < done["clock"]
    assert received["timestamp"] <= started["timestamp"] <= done["timestamp"]
    for event in (received, started, done, online):
        assert event["hostname"] == "w1@events" and event["pid"] == worker.pid
        assert isinstance(event["utcoffset"], int)
    assert {"freq", "active", "processed", "loadavg", "sw_ident", "sw_ver", "sw_sys"} <= set(online)
    assert online["sw_ident"] == "py-celeriac" and online["freq"] == 2.0


def test_failure_retry_and_reject_events(app: Celeriac) -> None:
    with Listener(app) as seen, start_worker(app, hostname="w2@events", task_events=True):
        failed = app.send_task("boom")
        retried = app.send_task("again")
        rejected = app.send_task("refuse")
        unknown = app.send_task("nobody.knows")
        event = seen.wait_for("task-failed", uuid=failed.id)
        assert event["exception"] == "ValueError('boom')"
        assert 'raise ValueError("boom")' in event["traceback"]
        event = seen.wait_for("task-retried", uuid=retried.id)
        assert event["exception"] == "KeyError('once more')"
        seen.wait_for("task-succeeded", uuid=retried.id)
        assert len(seen.of("task-received", uuid=retried.id)) == 2  # the retry is received again
        assert seen.wait_for("task-rejected", uuid=rejected.id)["requeue"] is False
        assert seen.wait_for("task-failed", uuid=unknown.id)["exception"] == "NotRegistered('nobody.knows')"
        assert not seen.of("task-received", uuid=unknown.id)


def test_revoked_and_expired_tasks_are_reported_revoked_not_received(app: Celeriac) -> None:
    with Listener(app) as seen:
        expired = app.send_task("add", [1, 1], expires=-1)
        with start_worker(app, hostname="w3@events", task_events=True):
            event = seen.wait_for("task-revoked", uuid=expired.id)
            assert (event["terminated"], event["signum"], event["expired"]) == (False, None, True)
    assert not seen.of("task-received", uuid=expired.id)


def test_a_terminated_task_is_reported_revoked_and_terminated(app: Celeriac) -> None:
    @app.task(name="nap")
    async def nap() -> None:
        await asyncio.sleep(30)

    with (
        Listener(app) as seen,
        start_worker(app, pool="async", hostname="w5@events", task_events=True) as worker,
    ):
        assert worker.control is not None
        eventually(worker.control.listening.is_set)
        result = nap.delay()
        seen.wait_for("task-started", uuid=result.id)
        app.control.revoke(result.id, ["w5@events"], terminate=True, signal="SIGKILL", reply=True)
        event = seen.wait_for("task-revoked", uuid=result.id)
    assert (event["terminated"], event["signum"], event["expired"]) == (True, 9, False)
    assert not seen.of("task-failed", uuid=result.id) and not seen.of("task-succeeded", uuid=result.id)


def test_without_task_events_only_worker_events_go_until_enabled(app: Celeriac) -> None:
    with Listener(app) as seen:
        with start_worker(app, hostname="w4@events", heartbeat_interval=0.1) as worker:
            assert not worker.events.enabled
            first = app.send_task("add", [1, 2])
            assert first.get(timeout=10) == 3
            beat = seen.wait_for("worker-heartbeat", hostname="w4@events")
            assert beat["freq"] == 0.1 and beat["processed"] >= 0
            eventually(lambda: any(e["processed"] >= 1 for e in seen.of("worker-heartbeat")))
            assert worker.events.enable() is True and worker.events.enable() is False
            second = app.send_task("add", [2, 2])
            assert second.get(timeout=10) == 4
            seen.wait_for("task-succeeded", uuid=second.id)
            assert worker.events.disable() is True and worker.events.disable() is False
            third = app.send_task("add", [3, 3])
            assert third.get(timeout=10) == 6
        seen.wait_for("worker-offline", hostname="w4@events")
    assert not [e for e in seen.events if e.get("uuid") in (first.id, third.id)]


def test_task_events_are_batched_as_task_multi(app: Celeriac) -> None:
    with (
        Listener(app, "task.multi") as batched,
        Listener(app, "worker.*") as workers,
        start_worker(app, hostname="w5@events", task_events=True, concurrency=4),
    ):
        results = [app.send_task("add", [i, i]) for i in range(60)]
        assert [r.get(timeout=10) for r in results] == [2 * i for i in range(60)]
        eventually(lambda: len(batched.of("task-succeeded")) == 60)
    assert len(batched.of("task-received")) == 60
    assert not [e for e in workers.events if e["type"].startswith("task-")]
    assert {e["type"] for e in workers.events} >= {"worker-online", "worker-offline"}


def test_a_client_sends_task_sent_when_asked(app: Celeriac) -> None:
    app.conf.task_send_sent_event = True
    with Listener(app) as seen:
        result = app.send_task("add", [4, 5], queue="nowhere", countdown=60)
        event = seen.wait_for("task-sent", uuid=result.id)
    assert event["name"] == "add" and event["args"] == "(4, 5)" and event["queue"] == "nowhere"
    assert event["hostname"].startswith("gen") and event["eta"] is not None and event["retries"] == 0
