"""Unique tasks with a real worker (in this process) on memory, SQLite and Redis: a key held until the
task starts or finishes is let go then, the default window outlives the run, and a keyed message
delivered again after its run succeeded is acked without running (the duplicate at-least-once allows).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celeriac, states
from celeriac.brokers.base import Delivery
from celeriac.testing import start_worker
from tests.contract.conftest import SERVERS, _require

KINDS = ["memory", "sqlite", "redis"]


@pytest.fixture(params=KINDS)
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Celeriac]:
    kind = request.param
    prefix = f"unique-{uuid.uuid4().hex[:10]}:"
    if kind == "memory":
        url = f"memory://{prefix}"
        app = Celeriac("uniq", broker=url, backend=url)
    elif kind == "sqlite":
        url = f"sqlite:///{tmp_path}/unique.sqlite3"
        app = Celeriac("uniq", broker=url, backend=url)
    else:
        _require("redis")
        url = SERVERS["redis"][3]
        app = Celeriac("uniq", broker=url, backend=url, broker_transport_options={"global_keyprefix": prefix})
    yield app
    app.close()
    if kind == "redis":
        asyncio.run(_wipe(url, prefix))


async def _wipe(url: str, prefix: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    async for key in client.scan_iter(match=f"{prefix}*"):
        await client.delete(key)
    await client.aclose()


def _runs_of(app: Celeriac) -> tuple[Counter[str], threading.Event, threading.Event]:
    """Register ``slow`` (unique until it finishes; runs until ``go`` is set) and ``once`` (keyed);
    the counter counts each task's runs."""
    runs: Counter[str] = Counter()
    started, go = threading.Event(), threading.Event()

    @app.task(name="uniq.slow", unique_for=60, unique_until="finish")
    def slow(n: int) -> int:
        runs["slow"] += 1
        started.set()
        go.wait(10)
        return n

    @app.task(name="uniq.once", unique_for=60)
    def once(n: int) -> int:
        runs["once"] += 1
        return n

    @app.task(name="uniq.plain")
    def plain(n: int) -> int:
        runs["plain"] += 1
        return n

    return runs, started, go


def test_a_key_held_until_finish_is_let_go_when_the_task_finishes(app: Celeriac) -> None:
    runs, started, go = _runs_of(app)
    slow = app.tasks["uniq.slow"]
    with start_worker(app, concurrency=2):
        first = slow.delay(1)
        assert started.wait(10)
        assert slow.delay(1).id == first.id  # running: still held
        go.set()
        assert first.get(timeout=10) == 1
        second = _sent_anew(lambda: slow.delay(1), first.id)
        assert second.get(timeout=10) == 1
    assert runs["slow"] == 2


def test_a_key_held_until_start_is_let_go_once_the_task_runs(app: Celeriac) -> None:
    _, started, go = _runs_of(app)

    @app.task(name="uniq.starting", unique_for=60, unique_until="start")
    def starting() -> None:
        started.set()
        go.wait(10)

    with start_worker(app, concurrency=2):
        first = starting.delay()
        assert started.wait(10)
        second = _sent_anew(starting.delay, first.id)  # the first still runs
        go.set()
        first.get(timeout=10)
        second.get(timeout=10)


def test_a_key_held_until_finish_is_let_go_when_the_task_expires_unrun(app: Celeriac) -> None:
    _, _, go = _runs_of(app)
    go.set()  # runs of `slow` end at once
    slow = app.tasks["uniq.slow"]
    doomed = slow.apply_async((3,), expires=0.05)
    time.sleep(0.1)
    with start_worker(app):
        assert _sent_anew(lambda: slow.delay(3), doomed.id).get(timeout=10) == 3
    assert doomed.state == states.REVOKED  # expired: never ran, its key let go


def test_the_default_window_outlives_the_run(app: Celeriac) -> None:
    runs, _, _ = _runs_of(app)
    once = app.tasks["uniq.once"]
    with start_worker(app):
        first = once.delay(5)
        assert first.get(timeout=10) == 5
        assert once.delay(5).id == first.id
    assert runs["once"] == 1


def test_a_keyed_message_delivered_again_after_its_run_succeeded_is_not_run_again(app: Celeriac) -> None:
    runs, _, _ = _runs_of(app)
    once, plain = app.tasks["uniq.once"], app.tasks["uniq.plain"]
    keyed = once.delay(7)
    unkeyed = plain.delay(8)
    copies = _take(app, 2)  # the messages as they were delivered, to deliver each once more
    with start_worker(app, concurrency=1):
        _put(app, copies)
        assert keyed.get(timeout=10) == 7 and unkeyed.get(timeout=10) == 8
        _put(app, copies)  # the same two messages again: at-least-once's duplicates
        marker = plain.delay(0)  # one worker slot, one queue: the copies are dealt with before it
        assert marker.get(timeout=10) == 0
    assert runs == Counter({"once": 1, "plain": 3})  # the unkeyed copy ran again; the keyed one did not
    assert keyed.state == states.SUCCESS


def _sent_anew(send: Any, old: str, timeout: float = 10.0) -> Any:
    """The result of ``send()`` once it goes out under a new id (the worker lets keys go as it hears
    the task start or finish: an instant after ``get`` or the task's own code sees it)."""
    deadline = time.monotonic() + timeout
    while True:
        result = send()
        if result.id != old or time.monotonic() > deadline:
            assert result.id != old, "the key was not let go"
            return result
        time.sleep(0.05)


def _take(app: Celeriac, count: int) -> list[Delivery]:
    async def take() -> list[Delivery]:
        broker = app.broker()
        deliveries = await broker.fetch(["celery"], count, 2.0)
        await broker.ack(deliveries)
        return deliveries

    deliveries = app.run(take())
    assert len(deliveries) == count
    return deliveries


def _put(app: Celeriac, deliveries: list[Delivery]) -> None:
    async def put() -> None:
        items = [("celery", d.message, None) for d in deliveries if d.message is not None]
        await app.broker().publish_many(items)

    app.run(put())
