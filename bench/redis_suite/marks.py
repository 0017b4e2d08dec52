"""What the bench's tasks report to the bench: marks with the worker's clock, and a done counter.

A drain is timed inside the worker: a ``start`` mark task is queued before the N tasks and a ``finish``
mark after them (or, for sleepers, the task that makes the counter reach N marks ``finish``). So a
worker's start-up time is not counted, and every system is timed the same way. Imports only redis-py,
as it runs in every system's environment (arq's has an older redis-py).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import redis
import redis.asyncio

MARKS = "bench:marks"
COUNT = "bench:count"

_sync: dict[int, redis.Redis] = {}
_async: dict[tuple[int, int], Any] = {}


def url() -> str:
    return os.environ["BENCH_REDIS_URL"]


def broker_url() -> str:
    """The broker the peers use: ``BENCH_BROKER_URL`` (the RabbitMQ suite sets it), else the Redis one."""
    return os.environ.get("BENCH_BROKER_URL") or url()


def result_url() -> str:
    """The result backend the peers use: ``BENCH_RESULT_URL`` (``rpc://`` in a RabbitMQ row), else Redis."""
    return os.environ.get("BENCH_RESULT_URL") or url()


def _client() -> redis.Redis:
    pid = os.getpid()  # a forked child makes its own connections
    if pid not in _sync:
        _sync[pid] = redis.Redis.from_url(url())
    return _sync[pid]


def _aclient() -> Any:
    key = (os.getpid(), id(asyncio.get_running_loop()))
    if key not in _async:
        _async[key] = redis.asyncio.Redis.from_url(url())
    return _async[key]


def mark(what: str) -> None:
    _client().rpush(MARKS, f"{what} {time.time()!r}")


async def amark(what: str) -> None:
    await _aclient().rpush(MARKS, f"{what} {time.time()!r}")


def count(total: int) -> None:
    if _client().incr(COUNT) == total:
        mark("finish")


async def acount(total: int) -> None:
    if await _aclient().incr(COUNT) == total:
        await amark("finish")
