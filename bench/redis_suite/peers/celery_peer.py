"""Celery on Redis, set up for speed as its docs advise.

Broker and result backend on Redis; ``worker_prefetch_multiplier=16`` (docs: many short tasks want a
higher multiplier); ``task_acks_late=False`` (the default: ack before running); rate limits disabled;
no-op tasks ``ignore_result=True``. The worker runs with ``--without-gossip --without-mingle
--without-heartbeat -O fair``. The RabbitMQ suite runs it on ``pyamqp://`` (``marks.broker_url``), with
Redis or ``rpc://`` results (``marks.result_url``).
"""

from __future__ import annotations

import time

from celery import Celery

from bench.redis_suite import marks

app = Celery("bench_celery", broker=marks.broker_url(), backend=marks.result_url())
app.conf.update(
    worker_prefetch_multiplier=16,
    task_acks_late=False,
    worker_disable_rate_limits=True,
    broker_connection_retry_on_startup=True,
    result_expires=3600,
)


@app.task(ignore_result=True)
def noop() -> None:
    return None


@app.task
def echo(value: int) -> int:
    return value


@app.task(ignore_result=True)
def sleeper(total: int) -> None:
    time.sleep(0.05)
    marks.count(total)


@app.task(ignore_result=True)
def mark(what: str) -> None:
    marks.mark(what)


class Client:
    def mark(self, what: str) -> None:
        mark.delay(what)

    def noops(self, n: int) -> None:
        for _ in range(n):
            noop.delay()

    def sleepers(self, n: int) -> None:
        for _ in range(n):
            sleeper.delay(n)

    def call(self, i: int) -> int:
        return int(echo.delay(i).get(timeout=30))

    def close(self) -> None:
        app.close()


def client() -> Client:
    return Client()
