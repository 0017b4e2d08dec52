"""The app the pool tests run: importable by name, so that spawned pool processes can load it."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from typing import Any

from celeriac.app import Celeriac
from celeriac.exceptions import SoftTimeLimitExceeded
from celeriac.task import Task

app = Celeriac("poolapp", broker="memory://", backend="memory://")

_hoard: list[bytes] = []


class Unpicklable(Exception):
    """An exception holding a lock, so it cannot be pickled."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def _explode() -> None:
    raise RuntimeError("this argument cannot be unpickled")


class LoadsBadly:
    """Pickles fine, but fails where it is unpickled (a pool process)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_explode, ())


def _spin(seconds: float) -> None:
    # many short sleeps: an exception raised into the thread lands between two of them
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def fail(message: str) -> None:
    raise ValueError(message)


@app.task(bind=True, max_retries=3)
def retrying(self: Task[Any, Any]) -> None:
    raise self.retry(countdown=5)


@app.task
async def async_add(x: int, y: int) -> int:
    await asyncio.sleep(0.01)
    return x + y


@app.task
async def async_sleepy(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@app.task
async def async_gives_up() -> None:
    raise asyncio.CancelledError("the task's own cancellation")


@app.task
def sleepy(seconds: float) -> int:
    """Sleep (interruptibly), then return the pid of the process that ran it."""
    _spin(seconds)
    return os.getpid()


@app.task
def stuck(seconds: float) -> None:
    """One long sleep in C: nothing raised into the thread lands before it ends."""
    time.sleep(seconds)


@app.task
def soft_limited(seconds: float) -> str:
    try:
        _spin(seconds)
    except SoftTimeLimitExceeded:
        return "cleaned"
    return "finished"


@app.task
def crash() -> None:
    os._exit(3)


@app.task
def self_kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@app.task
def pid() -> int:
    return os.getpid()


@app.task
def hog(mb: int) -> int:
    _hoard.append(b"x" * (mb << 20))  # kept, so the process stays that large
    return os.getpid()


@app.task
def unpicklable_return() -> Any:
    return lambda: None


@app.task
def unpicklable_exception() -> None:
    raise Unpicklable("cannot travel")


@app.task
def swallows_exceptions(seconds: float) -> str:
    """Catches every ``Exception`` while it spins: ``Terminated`` still ends it."""
    try:
        _spin(seconds)
    except Exception:
        return "swallowed"
    return "finished"


@app.task
async def async_stubborn(seconds: float) -> str:
    """Catches its cancellation once and carries on a little."""
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        await asyncio.sleep(0.1)
        return "carried on"
    return "finished"
