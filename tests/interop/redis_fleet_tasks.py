"""Task bodies shared by a Celery worker and a celeriac worker on one Redis (tests/interop).

Neither Celery nor celeriac is imported here: ``celery_redis_app`` and ``celeriac_redis_app`` each
register these functions under the same names, passing which kind of worker runs them. A task that
records itself writes to a Redis key the test names (its own connection), so the test can count who ran
what, and when, whichever process ran it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import redis

#: Broker and backend of both sides; the fixtures set it (db 13 is this suite's).
REDIS_URL = os.environ.get("INTEROP_REDIS_URL", "redis://127.0.0.1:6379/13")

WORK = "interop.redis.work"
FAIL = "interop.redis.fail"
FLAKY = "interop.redis.flaky"
NAMES = (WORK, FAIL, FLAKY)

_clients: dict[int, redis.Redis] = {}
_lock = threading.Lock()


class InteropError(Exception):
    """A task's own exception: both sides must re-raise it with this type, not a stand-in."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message, code)
        self.code = code


def _redis() -> redis.Redis:
    # One client per process (a forked pool child must not share its parent's sockets).
    with _lock:
        client = _clients.get(os.getpid())
        if client is None:
            client = _clients[os.getpid()] = redis.Redis.from_url(REDIS_URL)
        return client


def record(ledger: str, task_id: str, kind: str, **extra: Any) -> None:
    """Append ``{"id", "kind", "time", ...}`` to the list ``ledger``."""
    entry = {"id": task_id, "kind": kind, "time": time.time(), **extra}
    _redis().rpush(ledger, json.dumps(entry))


def work(task_id: str, kind: str, ledger: str, n: int, seconds: float = 0.0) -> int:
    """Record the run, then sleep ``seconds``; returns ``n``."""
    record(ledger, task_id, kind, n=n)
    if seconds:
        time.sleep(seconds)
    return n


def fail(error: str, message: str) -> None:
    if error == "ValueError":
        raise ValueError(message)
    raise InteropError(message, 42)


def attempts(ledger: str, task_id: str, kind: str, retries: int) -> int:
    """Record one run of a retrying task; returns how many runs its id has had so far."""
    record(ledger, task_id, kind, retries=retries)
    return int(_redis().hincrby(ledger + ".attempts", task_id, 1))


__all__ = ["NAMES", "REDIS_URL", "InteropError", "attempts", "fail", "record", "work"]
