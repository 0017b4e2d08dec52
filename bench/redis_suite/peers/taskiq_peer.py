"""Taskiq with taskiq-redis: ``ListQueueBroker`` (LPUSH/BRPOP) and ``RedisAsyncResultBackend``.

Worker: ``taskiq worker bench.redis_suite.peers.taskiq_peer:broker --workers 1 --max-async-tasks 100``.
``wait_result`` polls the backend every ``check_interval`` (default 0.2 s); 1 ms here for latency.
Results expire after an hour.
"""

from __future__ import annotations

import asyncio

from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend

from bench.redis_suite import marks

ASYNC = True

broker = ListQueueBroker(url=marks.url(), queue_name="bench").with_result_backend(
    RedisAsyncResultBackend(redis_url=marks.url(), result_ex_time=3600)
)


@broker.task
async def noop() -> None:
    return None


@broker.task
async def echo(value: int) -> int:
    return value


@broker.task
async def sleeper(total: int) -> None:
    await asyncio.sleep(0.05)
    await marks.acount(total)


@broker.task
async def mark(what: str) -> None:
    await marks.amark(what)


class Client:
    async def start(self) -> None:
        await broker.startup()

    async def mark(self, what: str) -> None:
        await mark.kiq(what)

    async def noops(self, n: int) -> None:
        for _ in range(n):
            await noop.kiq()

    async def sleepers(self, n: int) -> None:
        for _ in range(n):
            await sleeper.kiq(n)

    async def call(self, i: int) -> int:
        task = await echo.kiq(i)
        result = await task.wait_result(check_interval=0.001, timeout=30)
        return int(result.return_value)

    async def close(self) -> None:
        await broker.shutdown()


def client() -> Client:
    return Client()
