"""The tasks ``celeriac demo`` runs: plain, retried, failing, delayed and ``async def``."""

from __future__ import annotations

import asyncio
import time

from celeriac import Celeriac, Task

app = Celeriac("celeriac.demo")  # no broker given: the embedded SQLite default (or CELERIAC_BROKER_URL)


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(bind=True, max_retries=5)
def flaky(self: Task[..., int], value: int) -> int:
    """Fails twice, as a call to a shaky service might, then succeeds."""
    if self.request.retries < 2:
        raise self.retry(exc=ConnectionError("upstream not answering"), countdown=0.2)
    return value


@app.task
def fail(reason: str) -> None:
    raise ValueError(reason)


@app.task
def stamp() -> float:
    """Returns when it ran, so the caller can see a countdown was kept."""
    return time.time()


@app.task
async def fetch(n: int) -> int:
    await asyncio.sleep(0.05)  # stands for awaiting an HTTP call or a database
    return n * 10
