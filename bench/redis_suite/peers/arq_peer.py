"""arq (in its own venv: it needs redis-py < 6). Results are kept except for no-ops (``keep_result=0``).

Worker: ``arq bench.redis_suite.peers.arq_peer.WorkerSettings``. arq polls its queue (a sorted set)
every ``poll_delay`` (default 0.5 s), and ``job.result()`` polls too (default 0.5 s); both are set to
5 ms here for latency. ``max_jobs=100`` (default 10).
"""

from __future__ import annotations

import asyncio
from typing import Any

from arq import create_pool, func
from arq.connections import RedisSettings

from bench.redis_suite import marks

ASYNC = True
POLL = 0.005
SETTINGS = RedisSettings.from_dsn(marks.url())


async def noop(ctx: dict[str, Any]) -> None:
    return None


async def echo(ctx: dict[str, Any], value: int) -> int:
    return value


async def sleeper(ctx: dict[str, Any], total: int) -> None:
    await asyncio.sleep(0.05)
    await marks.acount(total)


async def mark(ctx: dict[str, Any], what: str) -> None:
    await marks.amark(what)


class WorkerSettings:
    functions = [func(noop, keep_result=0), echo, func(sleeper, keep_result=0), func(mark, keep_result=0)]
    redis_settings = SETTINGS
    max_jobs = 100
    poll_delay = POLL


class Client:
    async def start(self) -> None:
        self.pool = await create_pool(SETTINGS)

    async def mark(self, what: str) -> None:
        await self.pool.enqueue_job("mark", what)

    async def noops(self, n: int) -> None:
        for _ in range(n):
            await self.pool.enqueue_job("noop")

    async def sleepers(self, n: int) -> None:
        for _ in range(n):
            await self.pool.enqueue_job("sleeper", n)

    async def call(self, i: int) -> int:
        job = await self.pool.enqueue_job("echo", i)
        assert job is not None
        return int(await job.result(timeout=30, poll_delay=POLL))

    async def close(self) -> None:
        await self.pool.aclose()


def client() -> Client:
    return Client()
