"""Huey on Redis (``RedisHuey``) with ``notify_result=True``: a blocking result wait (BLPOP), not polling.

Worker: ``huey_consumer bench.redis_suite.peers.huey_peer.huey -w N -k thread``. Huey's consumer
blocks on the queue (``blocking=True``, its default for Redis). No-op tasks store no result.
"""

from __future__ import annotations

import time
from urllib.parse import urlparse

from huey import RedisHuey

from bench.redis_suite import marks

_url = urlparse(marks.url())
huey = RedisHuey(
    "bench",
    host=_url.hostname,
    port=_url.port,
    db=int(_url.path.lstrip("/") or 0),
    notify_result=True,
)


@huey.task()
def noop() -> None:
    return None


@huey.task()
def echo(value: int) -> int:
    return value


@huey.task()
def sleeper(total: int) -> None:
    time.sleep(0.05)
    marks.count(total)


@huey.task()
def mark(what: str) -> None:
    marks.mark(what)


class Client:
    def mark(self, what: str) -> None:
        mark(what)

    def noops(self, n: int) -> None:
        for _ in range(n):
            noop()

    def sleepers(self, n: int) -> None:
        for _ in range(n):
            sleeper(n)

    def call(self, i: int) -> int:
        return int(echo(i).get(blocking=True, timeout=30))

    def close(self) -> None:
        pass


def client() -> Client:
    return Client()
