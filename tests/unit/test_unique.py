"""Unique sends on the memory broker: a second send with the same key in the window publishes nothing
and answers the first send's result; what the key covers; bad options are clear errors; ordinary
sends never touch the key store. The worker's side: tests/integration/test_unique_worker.py."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from celeriac import Celeriac
from celeriac.brokers.base import Delivery
from celeriac.exceptions import ConfigurationError
from celeriac.unique.keys import HEADER


def _queued(app: Celeriac, queue: str = "celery") -> int:
    async def size() -> int:
        return await app.broker().size(queue)

    return app.run(size())


@pytest.fixture
def app(celeriac_app: Celeriac) -> Celeriac:
    return celeriac_app


def test_a_second_send_in_the_window_answers_the_first_and_publishes_nothing(app: Celeriac) -> None:
    @app.task(unique_for=60)
    def report(day: str, *, full: bool = False) -> str:
        return day

    first = report.delay("mon", full=True)
    again = report.apply_async(["mon"], {"full": True})
    assert again.id == first.id
    assert _queued(app) == 1
    other = report.delay("tue", full=True)  # other arguments: another key
    assert other.id != first.id
    assert _queued(app) == 2


def test_keyword_order_does_not_change_the_key(app: Celeriac) -> None:
    @app.task(unique_for=60)
    def move(src: str, dst: str) -> None: ...

    assert (
        move.apply_async(kwargs={"src": "a", "dst": "b"}).id
        == move.apply_async(kwargs={"dst": "b", "src": "a"}).id
    )


def test_an_explicit_idempotency_key_covers_whatever_the_arguments(app: Celeriac) -> None:
    @app.task
    def charge(order: int, cents: int) -> None: ...

    first = charge.apply_async((1, 500), idempotency_key="order-1")
    assert charge.apply_async((1, 499), idempotency_key="order-1").id == first.id
    assert charge.apply_async((1, 500)).id != first.id  # no key, no uniqueness
    assert _queued(app) == 2

    @app.task
    def refund(order: int) -> None: ...

    assert refund.apply_async((1,), idempotency_key="order-1").id != first.id  # keys are per task


def test_the_message_carries_its_key_for_the_worker(app: Celeriac) -> None:
    @app.task(unique_for=30, unique_until="finish")
    def job() -> None: ...

    job.delay()

    async def fetch() -> list[Delivery]:
        return await app.broker().fetch(["celery"], 1, 1.0)

    [delivery] = app.run(fetch())
    assert delivery.message is not None
    header = delivery.message.headers[HEADER]
    assert header["until"] == "finish" and header["key"].startswith(f"{job.name}:args:")
    assert header["keep"] == app.conf.result_expires  # a successful run is remembered that long


def test_when_the_window_ends_a_new_send_goes_out(app: Celeriac) -> None:
    @app.task
    def ping() -> None: ...

    first = ping.apply_async(unique_for=0.2)
    assert ping.apply_async(unique_for=0.2).id == first.id
    time.sleep(0.3)
    assert ping.apply_async(unique_for=0.2).id != first.id
    assert _queued(app) == 2


def test_eight_concurrent_senders_publish_one_message_and_share_its_id(app: Celeriac) -> None:
    @app.task(unique_for=60)
    def rebuild(index: str) -> None: ...

    ids: list[str] = []
    gate = threading.Barrier(8)

    def send() -> None:
        gate.wait()
        ids.append(rebuild.delay("products").id)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(ids) == 8 and len(set(ids)) == 1
    assert _queued(app) == 1


def test_async_sends_are_unique_too(app: Celeriac) -> None:
    @app.task(unique_for=60)
    def tick(n: int) -> None: ...

    async def go() -> None:
        first = await tick.aapply_async((1,))
        assert (await tick.adelay(1)).id == first.id
        assert await app.broker().size("celery") == 1
        await app.aclose()

    asyncio.run(go())


def test_a_send_that_could_not_publish_lets_its_key_go(
    app: Celeriac, monkeypatch: pytest.MonkeyPatch
) -> None:
    @app.task(unique_for=60)
    def job() -> None: ...

    async def fail(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the broker said no")

    monkeypatch.setattr(app, "publish_many", fail)
    with pytest.raises(RuntimeError, match="the broker said no"):
        job.delay()
    monkeypatch.undo()
    job.delay()
    assert _queued(app) == 1


def test_ordinary_sends_never_touch_the_key_store(app: Celeriac) -> None:
    @app.task
    def plain() -> None: ...

    plain.delay()
    app.send_task("elsewhere.task", (1,))
    assert len(app._key_stores) == 0


def test_a_running_task_counts_only_the_child_it_published(app: Celeriac) -> None:
    from celeriac._request import Context, current

    @app.task(unique_for=60)
    def child() -> None: ...

    parent = Context(id="parent-1", root_id="parent-1")
    token = current.set(parent)
    try:
        first = child.delay()
        child.delay()
    finally:
        current.reset(token)
    assert parent.children == [first.id]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"unique_for": 0}, "unique_for is a number of seconds greater than 0, got 0"),
        ({"unique_for": "60"}, "unique_for is a number of seconds greater than 0, got '60'"),
        ({"unique_for": 5, "unique_until": "end"}, "unique_until is one of window, start, finish, got 'end'"),
        ({"idempotency_key": ""}, "idempotency_key is a non-empty string, got ''"),
        ({"idempotency_key": 7}, "idempotency_key is a non-empty string, got 7"),
    ],
)
def test_bad_options_are_clear_errors(app: Celeriac, options: dict[str, Any], message: str) -> None:
    @app.task
    def job() -> None: ...

    with pytest.raises(ValueError, match=message):
        job.apply_async(**options)
    assert _queued(app) == 0


def test_bad_task_options_are_refused_when_the_task_is_made(app: Celeriac) -> None:
    with pytest.raises(ValueError, match=r"task 'bad': unique_for is a number of seconds greater than 0"):
        app.task(name="bad", unique_for=-1)(lambda: None)
    with pytest.raises(ValueError, match=r"task 'bad': unique_until is one of window, start, finish"):
        app.task(name="bad", unique_for=5, unique_until="never")(lambda: None)


def test_signatures_refuse_unique_options_rather_than_drop_them(app: Celeriac) -> None:
    @app.task
    def job(x: int) -> None: ...

    with pytest.raises(ValueError, match="apply to one task sent with its own apply_async"):
        job.s(1).apply_async(unique_for=60)
    assert _queued(app) == 0


def test_rabbitmq_without_a_store_is_a_clear_error_at_send_time() -> None:
    app = Celeriac("proj", broker="amqp://guest@127.0.0.1:1//", backend="rpc://")

    @app.task(unique_for=60)
    def job() -> None: ...

    try:
        with pytest.raises(
            ConfigurationError, match="unique tasks keep their keys on the broker or the result"
        ):
            job.delay()
    finally:
        app.close()


@pytest.mark.parametrize(
    ("broker", "backend", "kind", "url"),
    [
        (None, None, "SQLKeyStore", "sqlite:///proj.celeriac.sqlite3"),
        ("redis://h:6379/0", "redis://h:6379/1", "RedisKeyStore", "redis://h:6379/0"),
        ("amqp://guest@h//", "redis://h:6379/1", "RedisKeyStore", "redis://h:6379/1"),
        ("amqp://guest@h//", "db+postgresql://h/db", "SQLKeyStore", "db+postgresql://h/db"),
        ("memory://x", None, "MemoryKeyStore", "memory://x"),
    ],
)
def test_keys_live_on_the_broker_else_on_the_result_backend(broker, backend, kind, url) -> None:
    from celeriac.unique import key_store_for

    store = key_store_for(Celeriac("proj", broker=broker, backend=backend))
    assert (type(store).__name__, store.url, store.scope) == (kind, url, "proj")
