"""celeriac on Redis: Redis broker, Redis result backend, defaults otherwise (late acks). The RabbitMQ
suite runs it on ``amqp://`` (``marks.broker_url``), with Redis or ``rpc://`` results (``marks.result_url``).

Worker: ``celeriac -A bench.redis_suite.peers.celeriac_peer:app worker -P POOL -c N``.
``BENCH_VARIANT=async`` makes the client call the ``async def`` twins (for the async pool, which runs a
plain ``def`` task in a thread).
"""

from __future__ import annotations

import asyncio
import os
import time

from bench.redis_suite import marks
from celeriac import Celeriac

app = Celeriac("bench_celeriac")
app.conf.update(broker_url=marks.broker_url(), result_backend=marks.result_url())


@app.task(ignore_result=True)
def noop() -> None:
    return None


@app.task(ignore_result=True)
async def anoop() -> None:
    return None


@app.task
def echo(value: int) -> int:
    return value


@app.task
async def aecho(value: int) -> int:
    return value


@app.task(ignore_result=True)
def sleeper(total: int) -> None:
    time.sleep(0.05)
    marks.count(total)


@app.task(ignore_result=True)
async def asleeper(total: int) -> None:
    await asyncio.sleep(0.05)
    await marks.acount(total)


@app.task(ignore_result=True)
def mark(what: str) -> None:
    marks.mark(what)


class Client:
    def __init__(self) -> None:
        variant = os.environ.get("BENCH_VARIANT", "")
        self.noop = anoop if variant == "async" else noop
        self.echo = aecho if variant == "async" else echo
        self.sleeper = asleeper if variant == "async" else sleeper

    def mark(self, what: str) -> None:
        mark.delay(what)

    def noops(self, n: int) -> None:
        for _ in range(n):
            self.noop.delay()

    def sleepers(self, n: int) -> None:
        for _ in range(n):
            self.sleeper.delay(n)

    def call(self, i: int) -> int:
        return self.echo.delay(i).get(timeout=30)

    def close(self) -> None:
        app.close()


def client() -> Client:
    return Client()
