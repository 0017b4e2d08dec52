"""A mixed fleet on one RabbitMQ queue: a real ``celery worker`` and a ``celeriac worker`` process share it.

300 tasks, half sent by a Celery client and half by ours, are drained by both kinds of worker: every task
runs exactly once (a Redis ledger counts the runs of each id), both kinds run some, and each client reads
the results of the tasks it sent (with Redis results, of every task). Once with ``rpc://`` results, once
with Redis results. Queues and keys carry one token and are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from celeriac.amqp.broker import AMQPBroker
from tests.contract.test_rpc_backend import AMQP, require_rabbitmq
from tests.interop import celeriac_rabbit_app, celery_rabbit_app
from tests.interop.celery_rabbit_app import WORK
from tests.interop.conftest import require_redis
from tests.interop.rabbit_fleet import RESULTS, Rabbit, close_celery_client
from tests.interop.redis_fleet import WAIT

pytestmark = [
    # Celery 5.7's Redis backend still calls redis-py's SETEX, which redis-py 8 marks deprecated.
    pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning"),
]

TASKS = 300


@pytest.fixture
def rabbit(tmp_path: Path) -> Iterator[Rabbit]:
    require_rabbitmq()
    require_redis()  # the ledger, and the Redis results
    rabbit = Rabbit(tmp_path)
    try:
        yield rabbit
    finally:
        rabbit.close()


async def _left_on(queue: str) -> int:
    broker = AMQPBroker(AMQP)
    try:
        return await broker.size(queue)
    finally:
        await broker.close()


@pytest.mark.parametrize("results", sorted(RESULTS))
def test_mixed_fleet_drains_one_queue_exactly_once(rabbit: Rabbit, results: str) -> None:
    """One Celery worker (threads, 2, prefetch 4) and one celeriac worker (threads, 2, prefetch 1)."""
    backend = RESULTS[results]
    space, queue = rabbit.space, rabbit.queue("mixed")
    ledger = space.name("ledger")
    with ThreadPoolExecutor(2) as starting:  # both are up before the first task is sent
        started = [
            starting.submit(rabbit.celery_worker, [queue], results=backend),
            starting.submit(rabbit.celeriac_worker, [queue], results=backend),
        ]
        workers = [future.result() for future in started]
    celery_client = celery_rabbit_app.build(backend)
    ours = celeriac_rabbit_app.build(backend)
    try:
        sent = {}
        for n in range(TASKS):
            client = celery_client if n % 2 else ours
            result = client.send_task(WORK, (ledger, n, 0.005), queue=queue, task_id=space.task_id())
            sent[result.id] = (n, result)
        entries = space.wait_ledger(ledger, TASKS, timeout=40, why=rabbit.why)
        time.sleep(0.3)  # a duplicate would show up now
        entries = space.ledger(ledger)
        runs = Counter(entry["id"] for entry in entries)
        assert set(runs) == set(sent)
        assert [task_id for task_id, count in runs.items() if count != 1] == []
        ran_by = Counter(entry["kind"] for entry in entries)
        assert ran_by["celery"] > 0 and ran_by["celeriac"] > 0, ran_by
        assert asyncio.run(_left_on(queue)) == 0
        # Each client reads what it sent (rpc:// answers the sender only); stored results, everyone.
        for n, result in sent.values():
            assert result.get(timeout=WAIT) == n
        if results == "redis":
            for task_id, (n, _) in sent.items():
                assert celery_client.AsyncResult(task_id).get(timeout=WAIT) == n
                assert ours.AsyncResult(task_id).get(timeout=WAIT) == n
    finally:
        close_celery_client(celery_client)
        ours.close()
        codes = [worker.stop() for worker in workers]
    assert codes == [0, 0], rabbit.why()
