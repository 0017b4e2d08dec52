"""SAQ on Redis: ``Queue.from_url``, ``concurrency=100``; results through ``queue.apply``, which polls the
job every ``poll_interval`` (default 0.5 s; 1 ms here for latency). ``job.refresh(until_complete=...)``
listens on pub/sub instead, but it reads the job before it starts listening, and a job that finishes in
between is never noticed: in this bench it hung a round trip until its timeout, so it is not used.

Worker: ``saq bench.redis_suite.peers.saq_peer.settings --workers 1``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from saq import Queue

from bench.redis_suite import marks

ASYNC = True
POLL = 0.001

queue = Queue.from_url(marks.url(), name="bench")


async def noop(ctx: dict[str, Any]) -> None:
    return None


async def echo(ctx: dict[str, Any], *, value: int) -> int:
    return value


async def sleeper(ctx: dict[str, Any], *, total: int) -> None:
    await asyncio.sleep(0.05)
    await marks.acount(total)


async def mark(ctx: dict[str, Any], *, what: str) -> None:
    await marks.amark(what)


settings = {"queue": queue, "functions": [noop, echo, sleeper, mark], "concurrency": 100}


class Client:
    async def start(self) -> None:
        await queue.connect()

    async def mark(self, what: str) -> None:
        await queue.enqueue("mark", what=what)

    async def noops(self, n: int) -> None:
        for _ in range(n):
            await queue.enqueue("noop")

    async def sleepers(self, n: int) -> None:
        for _ in range(n):
            await queue.enqueue("sleeper", total=n)

    async def call(self, i: int) -> int:
        return int(await queue.apply("echo", value=i, timeout=30, poll_interval=POLL))

    async def close(self) -> None:
        await queue.disconnect()


def client() -> Client:
    return Client()
