"""RQ: one queue, jobs enqueued by function, results read with ``latest_result(timeout=...)``.

Worker: ``rq worker bench --url URL --worker-class rq.worker.SimpleWorker`` (no fork per job: RQ's
docs on performance). No-op jobs are enqueued with ``result_ttl=0`` (no result kept).
"""

from __future__ import annotations

import time

from redis import Redis
from rq import Queue

from bench.redis_suite import marks

QUEUE = "bench"


def noop() -> None:
    return None


def echo(value: int) -> int:
    return value


def sleeper(total: int) -> None:
    time.sleep(0.05)
    marks.count(total)


def mark(what: str) -> None:
    marks.mark(what)


class Client:
    def __init__(self) -> None:
        self.redis = Redis.from_url(marks.url())
        self.queue = Queue(QUEUE, connection=self.redis)

    def mark(self, what: str) -> None:
        self.queue.enqueue(mark, what, result_ttl=0)

    def noops(self, n: int) -> None:
        for _ in range(n):
            self.queue.enqueue(noop, result_ttl=0)

    def sleepers(self, n: int) -> None:
        for _ in range(n):
            self.queue.enqueue(sleeper, n, result_ttl=0)

    def call(self, i: int) -> int:
        job = self.queue.enqueue(echo, i)
        result = job.latest_result(timeout=30)
        assert result is not None, "no result within 30 s"
        value = result.return_value
        assert isinstance(value, int)
        return value

    def close(self) -> None:
        self.redis.close()


def client() -> Client:
    return Client()
