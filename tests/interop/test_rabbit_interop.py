"""celeriac and the real Celery 5.7 on one RabbitMQ, with rpc:// or Redis results, both ways.

One way, a ``celery worker`` subprocess (Celery's pyamqp transport) runs tasks a celeriac client sends,
and the celeriac client reads the results; the other way, a celeriac worker (in-process) runs tasks a
Celery client sends, and Celery reads the results. Results travel by ``rpc://`` (a message to the
sender's reply queue) or are stored in Redis (``celery-task-meta-<id>``): the module runs once with
each (``results``). What crosses, each way: values, task exceptions with their types, retries,
countdowns (kept by RabbitMQ in kombu's delay queues, not in a worker's memory), expiry (REVOKED, never
run) and priorities (queues declared with ``x-max-priority`` on both sides).

Tasks that record themselves append ``{"id", "kind", "time", ...}`` to a Redis list (``redis_fleet_tasks``),
so a test sees which kind of worker ran what, and when. Every queue and key carries one token and is
deleted afterwards.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from celery import Celery  # type: ignore[import-untyped]
from celery.exceptions import TaskRevokedError as CeleryTaskRevokedError  # type: ignore[import-untyped]

from celeriac import Celeriac
from celeriac.amqp.broker import AMQPBroker
from celeriac.exceptions import TaskRevokedError
from celeriac.testing import start_worker
from celeriac.worker import Worker
from tests.contract.test_rpc_backend import AMQP, require_rabbitmq
from tests.interop import celeriac_rabbit_app, celery_rabbit_app
from tests.interop.celery_rabbit_app import ADD, FAIL, FLAKY, WORK
from tests.interop.conftest import require_redis
from tests.interop.rabbit_fleet import RESULTS, Rabbit, close_celery_client
from tests.interop.redis_fleet import WAIT
from tests.interop.redis_fleet_tasks import InteropError

pytestmark = [
    # Celery 5.7's Redis backend still calls redis-py's SETEX, which redis-py 8 marks deprecated.
    pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning"),
]

#: The result of a task a worker of either kind did not run because it expired.
EXPIRED = {"exc_type": "TaskRevokedError", "exc_message": ["expired"], "exc_module": "celery.exceptions"}


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rabbit]:
    require_rabbitmq()
    require_redis()  # the tasks' ledgers, and the Redis results
    rabbit = Rabbit(tmp_path_factory.mktemp("rabbit-interop"))
    try:
        yield rabbit
    finally:
        rabbit.close()


@pytest.fixture(scope="module", params=sorted(RESULTS))
def results(request: pytest.FixtureRequest) -> str:
    """The result backend of both sides: ``rpc://`` or Redis."""
    return RESULTS[request.param]


@pytest.fixture(scope="module")
def celery_queue(rabbit: Rabbit, results: str) -> Iterator[str]:
    """The queue of this module's ``celery worker`` (threads, 2), whose results go to ``results``."""
    queue = rabbit.queue("celery")
    worker = rabbit.celery_worker([queue], results=results)
    yield queue
    worker.stop()


@pytest.fixture(scope="module")
def celery_client(results: str) -> Iterator[Celery]:
    app = celery_rabbit_app.build(results)
    yield app
    close_celery_client(app)


@pytest.fixture(scope="module")
def ours(results: str) -> Iterator[Celeriac]:
    app = celeriac_rabbit_app.build(results)
    yield app
    app.close()


StartOurs = Callable[..., AbstractContextManager[Worker]]


@pytest.fixture
def start_ours(results: str) -> Iterator[StartOurs]:
    """Start celeriac's worker in this process: ``with start_ours(queue, concurrency=, prefetch=)``."""
    with ExitStack() as stack:

        @contextmanager
        def start(
            queue: str, *, concurrency: int = 2, prefetch: int = 1, **settings: Any
        ) -> Iterator[Worker]:
            app = celeriac_rabbit_app.build(results, **settings)
            stack.callback(app.close)
            with start_worker(
                app, queues=[queue], concurrency=concurrency, prefetch_multiplier=prefetch
            ) as worker:
                yield worker

        yield start


def _raw_result(rabbit: Rabbit, results: str, task_id: str) -> dict[str, Any] | None:
    """The record stored in Redis (None with rpc://, which stores nothing)."""
    return rabbit.space.raw_result(task_id) if results.startswith("redis") else None


# -- values and failures, both ways ------------------------------------------------------------------


def test_celeriac_client_reads_results_of_a_celery_worker(
    rabbit: Rabbit, ours: Celeriac, celery_queue: str
) -> None:
    def send(name: str, args: tuple[Any, ...]) -> Any:
        return ours.send_task(name, args, queue=celery_queue, task_id=rabbit.space.task_id())

    results = [send(ADD, (i, 1)) for i in range(10)]
    assert [r.get(timeout=WAIT) for r in results] == [{"sum": i + 1, "kind": "celery"} for i in range(10)]
    with pytest.raises(ValueError, match="bad value") as raised:
        send(FAIL, ("ValueError", "bad value")).get(timeout=WAIT)
    assert type(raised.value) is ValueError
    with pytest.raises(InteropError) as custom:
        send(FAIL, ("InteropError", "custom")).get(timeout=WAIT)
    assert custom.value.args == ("custom", 42)
    assert custom.value.code == 42


def test_celery_client_reads_results_of_a_celeriac_worker(
    rabbit: Rabbit, celery_client: Celery, start_ours: StartOurs
) -> None:
    queue = rabbit.queue("ours")

    def send(name: str, args: tuple[Any, ...]) -> Any:
        return celery_client.send_task(name, args, queue=queue, task_id=rabbit.space.task_id())

    with start_ours(queue):
        sent = [send(ADD, (i, 2)) for i in range(10)]
        assert [r.get(timeout=WAIT) for r in sent] == [{"sum": i + 2, "kind": "celeriac"} for i in range(10)]
        with pytest.raises(ValueError, match="bad value") as raised:
            send(FAIL, ("ValueError", "bad value")).get(timeout=WAIT)
        assert type(raised.value) is ValueError
        failed = send(FAIL, ("InteropError", "custom"))
        with pytest.raises(InteropError) as custom:
            failed.get(timeout=WAIT)
        assert custom.value.args == ("custom", 42)
        assert failed.state == "FAILURE"
        assert "InteropError" in failed.traceback and "celeriac_rabbit_app.py" in failed.traceback


# -- retries -----------------------------------------------------------------------------------------


def _assert_retried(rabbit: Rabbit, ledger: str, task_id: str) -> None:
    runs = rabbit.space.ledger(ledger)
    assert [(e["id"], e["retries"]) for e in runs] == [(task_id, 0), (task_id, 1), (task_id, 2)]
    assert all(b["time"] - a["time"] >= 0.19 for a, b in itertools.pairwise(runs)), "retried too early"


def test_retries_on_our_worker_for_a_celery_client(
    rabbit: Rabbit, celery_client: Celery, start_ours: StartOurs
) -> None:
    """Retried twice (countdown 0.2 s, which RabbitMQ's delay queues round up to whole seconds), then
    the result reaches Celery's client."""
    queue, ledger = rabbit.queue("ours"), rabbit.space.name("ledger")
    with start_ours(queue):
        result = celery_client.send_task(FLAKY, (ledger, 2, 0.2), queue=queue, task_id=rabbit.space.task_id())
        assert result.get(timeout=WAIT) == {"runs": 3, "retries": 2, "kind": "celeriac"}
        assert result.state == "SUCCESS"
    _assert_retried(rabbit, ledger, result.id)


def test_retries_on_celery_worker_for_our_client(rabbit: Rabbit, ours: Celeriac, celery_queue: str) -> None:
    ledger = rabbit.space.name("ledger")
    result = ours.send_task(FLAKY, (ledger, 2, 0.2), queue=celery_queue, task_id=rabbit.space.task_id())
    assert result.get(timeout=WAIT) == {"runs": 3, "retries": 2, "kind": "celery"}
    assert result.state == "SUCCESS"
    _assert_retried(rabbit, ledger, result.id)


def test_retry_state_reaches_the_other_sides_client(
    rabbit: Rabbit, results: str, ours: Celeriac, celery_queue: str, start_ours: StartOurs
) -> None:
    """While a task waits for its retry, the client that sent it reads RETRY, whichever side runs it.

    Our client is the module's, which has waited for results before. Celery's is fresh: its rpc client
    reads ``state`` with ``basic.get``, which finds nothing once a ``get()`` has started its result
    consumer (the consumer takes the replies, and only a ``get()`` reads them): Celery's limitation.
    """
    space = rabbit.space
    queue, ledger = rabbit.queue("ours"), space.name("ledger")
    celery_client = celery_rabbit_app.build(results)
    try:
        with start_ours(queue):
            by_celery = ours.send_task(FLAKY, (ledger, 1, 1.0), queue=celery_queue, task_id=space.task_id())
            by_ours = celery_client.send_task(FLAKY, (ledger, 1, 1.0), queue=queue, task_id=space.task_id())
            seen: dict[str, set[str]] = {"celery": set(), "celeriac": set()}
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline and not all("RETRY" in states for states in seen.values()):
                seen["celery"].add(by_celery.state)
                seen["celeriac"].add(by_ours.state)
                time.sleep(0.02)
            assert by_celery.get(timeout=WAIT)["kind"] == "celery"
            assert by_ours.get(timeout=WAIT)["kind"] == "celeriac"
        assert by_celery.state == by_ours.state == "SUCCESS"
    finally:
        close_celery_client(celery_client)
    assert "RETRY" in seen["celery"] and "RETRY" in seen["celeriac"], seen


# -- countdown, and expiry while waiting -------------------------------------------------------------


async def _waiting_in_rabbitmq(queue: str) -> int:
    """Messages for ``queue`` on it or in kombu's delay queues (read unacked and given back)."""
    broker = AMQPBroker(AMQP)
    try:
        return await broker.size(queue)
    finally:
        await broker.close()


def test_celery_countdown_waits_in_rabbitmq_for_our_worker(
    rabbit: Rabbit, results: str, celery_client: Celery, start_ours: StartOurs
) -> None:
    """A Celery message due in 2 s goes back to RabbitMQ's delay queues (not a worker's memory) and runs
    on time; one that expires while it waits is REVOKED and never run."""
    space = rabbit.space
    queue, ledger = rabbit.queue("ours"), space.name("ledger")
    with start_ours(queue):
        before = time.time()
        due = celery_client.send_task(WORK, (ledger, 1), queue=queue, task_id=space.task_id(), countdown=2)
        expiring = celery_client.send_task(
            WORK, (ledger, 2), queue=queue, task_id=space.task_id(), countdown=2, expires=1
        )
        deadline = time.monotonic() + 1.5
        while asyncio.run(_waiting_in_rabbitmq(queue)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert asyncio.run(_waiting_in_rabbitmq(queue)) == 2, "the ETA messages are not waiting in RabbitMQ"
        assert space.ledger(ledger) == []
        assert due.get(timeout=WAIT) == 1
        with pytest.raises(CeleryTaskRevokedError, match="expired"):
            expiring.get(timeout=WAIT)
        assert expiring.state == "REVOKED"
    [run] = space.ledger(ledger)
    assert (run["id"], run["kind"]) == (due.id, "celeriac")
    assert before + 2 <= run["time"] < before + 2 + 3, "ran before its countdown, or far later"
    record = _raw_result(rabbit, results, expiring.id)
    if record is not None:
        assert (record["status"], record["result"]) == ("REVOKED", EXPIRED)


def test_our_countdown_runs_on_celery_worker(
    rabbit: Rabbit, results: str, ours: Celeriac, celery_queue: str
) -> None:
    """Our client sends a delayed task through kombu's delay queues, which Celery's worker does not
    need to know about: the message reaches its queue when due and runs; one that expires while it
    waits is REVOKED by Celery, and never run."""
    space = rabbit.space
    ledger = space.name("ledger")
    before = time.time()
    due = ours.send_task(WORK, (ledger, 1), queue=celery_queue, task_id=space.task_id(), countdown=1.5)
    expiring = ours.send_task(
        WORK, (ledger, 2), queue=celery_queue, task_id=space.task_id(), countdown=1.5, expires=1
    )
    assert due.get(timeout=WAIT) == 1
    with pytest.raises(TaskRevokedError, match="expired"):
        expiring.get(timeout=WAIT)
    assert expiring.state == "REVOKED"
    [run] = space.ledger(ledger)
    assert (run["id"], run["kind"]) == (due.id, "celery")
    assert before + 1.5 <= run["time"] < before + 1.5 + 3, "ran before its countdown, or far later"
    record = _raw_result(rabbit, results, expiring.id)
    if record is not None:
        assert (record["status"], record["result"]) == ("REVOKED", EXPIRED)


# -- expired on arrival ------------------------------------------------------------------------------
#
# A message whose ``expires`` has passed is sent by Celery's client with the AMQP TTL ``expiration`` 0:
# RabbitMQ drops it unless a consumer can take it at once, and then no worker ever records it REVOKED
# (Celery's client warns so; ours sends no TTL). So each test first has a task run on the queue: a
# worker is consuming it, with room in its prefetch, when the expired message arrives.


def test_expired_celery_message_is_revoked_by_our_worker(
    rabbit: Rabbit, results: str, celery_client: Celery, start_ours: StartOurs
) -> None:
    space = rabbit.space
    queue, ledger = rabbit.queue("ours"), space.name("ledger")
    with start_ours(queue):
        first = celery_client.send_task(WORK, (ledger, 1), queue=queue, task_id=space.task_id())
        assert first.get(timeout=WAIT) == 1
        past = datetime.now(UTC) - timedelta(seconds=10)
        result = celery_client.send_task(
            WORK, (ledger, 2), queue=queue, task_id=space.task_id(), expires=past
        )
        with pytest.raises(CeleryTaskRevokedError, match="expired"):
            result.get(timeout=WAIT)
        assert result.state == "REVOKED"
        last = celery_client.send_task(WORK, (ledger, 3), queue=queue, task_id=space.task_id())
        assert last.get(timeout=WAIT) == 3  # still serving
    assert [e["n"] for e in space.ledger(ledger)] == [1, 3]
    record = _raw_result(rabbit, results, result.id)
    if record is not None:
        assert (record["status"], record["result"], record["traceback"]) == ("REVOKED", EXPIRED, None)


def test_expired_celeriac_message_is_revoked_by_celery_worker(
    rabbit: Rabbit, results: str, ours: Celeriac, celery_queue: str
) -> None:
    space = rabbit.space
    ledger = space.name("ledger")
    assert (
        ours.send_task(WORK, (ledger, 1), queue=celery_queue, task_id=space.task_id()).get(timeout=WAIT) == 1
    )
    past = datetime.now(UTC) - timedelta(seconds=10)
    result = ours.send_task(WORK, (ledger, 2), queue=celery_queue, task_id=space.task_id(), expires=past)
    with pytest.raises(TaskRevokedError, match="expired"):
        result.get(timeout=WAIT)
    assert result.state == "REVOKED"
    assert (
        ours.send_task(WORK, (ledger, 3), queue=celery_queue, task_id=space.task_id()).get(timeout=WAIT) == 3
    )
    assert [e["n"] for e in space.ledger(ledger)] == [1, 3]
    record = _raw_result(rabbit, results, result.id)
    if record is not None:
        assert (record["status"], record["result"], record["traceback"]) == ("REVOKED", EXPIRED, None)


# -- priority ----------------------------------------------------------------------------------------

#: ``task_queue_max_priority`` on both sides: the queue is declared with ``x-max-priority`` 10.
MAX_PRIORITY = 10
BACKLOG = 8
HIGH = 99


def _send_backlog_then_high(send: Callable[..., Any], queue: str, ledger: str, rabbit: Rabbit) -> None:
    """A backlog of slow priority-1 tasks, then one priority-9 task."""
    for n in range(BACKLOG):
        send(WORK, (ledger, n, 0.15), queue=queue, task_id=rabbit.space.task_id(), priority=1)
    send(WORK, (ledger, HIGH), queue=queue, task_id=rabbit.space.task_id(), priority=9)


def _assert_high_ran_before_the_tail(runs: list[dict[str, Any]], kind: str) -> None:
    order = [run["n"] for run in runs]
    assert sorted(order) == [*range(BACKLOG), HIGH]
    # The worker holds one or two backlog tasks when the high one arrives; it must overtake the rest.
    assert order.index(HIGH) <= 3, f"the priority-9 task ran after the backlog's tail: {order}"
    assert {run["kind"] for run in runs} == {kind}


def test_celery_priorities_are_kept_by_our_worker(rabbit: Rabbit) -> None:
    """A Celery client and our worker (concurrency 1, prefetch 1), both with ``task_queue_max_priority``:
    a priority-9 task sent after a backlog runs before the backlog's tail."""
    queue, ledger = rabbit.queue("prio"), rabbit.space.name("ledger")
    client = celery_rabbit_app.build("rpc://", task_queue_max_priority=MAX_PRIORITY)
    app = celeriac_rabbit_app.build("rpc://", task_queue_max_priority=MAX_PRIORITY)
    try:
        with start_worker(app, queues=[queue], concurrency=1, prefetch_multiplier=1):
            _send_backlog_then_high(client.send_task, queue, ledger, rabbit)
            runs = rabbit.space.wait_ledger(ledger, BACKLOG + 1)
    finally:
        close_celery_client(client)
        app.close()
    _assert_high_ran_before_the_tail(runs, "celeriac")


def test_our_priorities_are_kept_by_celery_worker(rabbit: Rabbit) -> None:
    """Our client and a Celery worker (concurrency 1, prefetch 1), both with ``task_queue_max_priority``:
    a priority-9 task sent after a backlog runs before the backlog's tail."""
    queue, ledger = rabbit.queue("prio"), rabbit.space.name("ledger")
    worker = rabbit.celery_worker([queue], max_priority=MAX_PRIORITY, concurrency=1, prefetch=1)
    client = celeriac_rabbit_app.build("rpc://", task_queue_max_priority=MAX_PRIORITY)
    try:
        _send_backlog_then_high(client.send_task, queue, ledger, rabbit)
        runs = rabbit.space.wait_ledger(ledger, BACKLOG + 1, why=rabbit.why)
    finally:
        client.close()
        worker.stop()
    _assert_high_ran_before_the_tail(runs, "celery")
