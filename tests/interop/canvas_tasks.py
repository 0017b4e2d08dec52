"""The tasks of the canvas interop tests, registered alike on a Celery app and a celeriac app.

``celery worker -A tests.interop.canvas_tasks:celery_app`` and ``celeriac -A
tests.interop.canvas_tasks:celeriac_app worker`` serve the same task names on the Redis named by
``INTEROP_REDIS_URL`` (db 12 is this suite's). Tasks that record themselves append
``{"kind", "value"}`` to a Redis list the test names, so a test sees which kind of worker ran what.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import redis
from celery import Celery  # type: ignore[import-untyped]

from celeriac import Celeriac

#: Broker, backend and ledgers of both sides (db 12 is this suite's).
REDIS_URL = os.environ.get("INTEROP_CANVAS_REDIS_URL", "redis://127.0.0.1:6379/12")

ADD, MUL, TSUM, FAIL, PART, BODY, RECORD, ERRBACK, IDENT = (
    f"interop.canvas.{name}"
    for name in ("add", "mul", "tsum", "fail", "part", "body", "record", "errback", "ident")
)


_clients: dict[int, redis.Redis] = {}
_lock = threading.Lock()


def _redis() -> redis.Redis:
    # One client per process: a forked pool child must not share its parent's socket.
    with _lock:
        client = _clients.get(os.getpid())
        if client is None:
            client = _clients[os.getpid()] = redis.Redis.from_url(REDIS_URL)
        return client


def _record(ledger: str, kind: str, **entry: Any) -> None:
    _redis().rpush(ledger, json.dumps({"kind": kind, **entry}))


def _tasks(kind: str) -> dict[str, Any]:
    """The task functions, by name, for a worker of ``kind`` (``celery`` or ``celeriac``)."""

    def add(x: int, y: int) -> int:
        return x + y

    def mul(x: int, y: int) -> int:
        return x * y

    def tsum(values: list[int]) -> int:
        return sum(values)

    def ident(value: Any) -> Any:
        return value

    def fail(*args: Any) -> None:
        raise ValueError(f"fail{args!r}")

    def part(n: int, ledger: str, seconds: float = 0.0) -> int:
        """A chord header task that records which kind of worker ran it (then sleeps ``seconds``)."""
        _record(ledger, kind, value=n)
        time.sleep(seconds)
        return n

    def body(values: list[int], counter: str) -> dict[str, Any]:
        """A chord body that counts its runs (INCR) and says who ran it."""
        runs = int(_redis().incr(counter))
        return {"sum": sum(values), "runs": runs, "kind": kind}

    def record(value: Any, ledger: str) -> Any:
        """A link callback: records the value it was called with."""
        _record(ledger, kind, value=value)
        return value

    def errback(task_id: str, ledger: str) -> str:
        """A link_error callback (old style: the failed task's id first)."""
        _record(ledger, kind, value=task_id)
        return task_id

    return {
        ADD: add,
        MUL: mul,
        TSUM: tsum,
        FAIL: fail,
        PART: part,
        BODY: body,
        RECORD: record,
        ERRBACK: errback,
        IDENT: ident,
    }


def build_celery(url: str = REDIS_URL, **settings: Any) -> Celery:
    """A Celery app on ``url`` (broker and backend) with the canvas tasks registered."""
    app = Celery("interop_canvas", broker=url, backend=url, set_as_current=False)
    app.conf.update(
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_enable_remote_control=False,
        result_expires=600,
        **settings,
    )
    for name, fn in _tasks("celery").items():
        app.task(name=name, shared=False)(fn)
    return app


def build_celeriac(url: str = REDIS_URL, **settings: Any) -> Celeriac:
    """A celeriac app on ``url`` (broker and backend) with the canvas tasks registered."""
    settings.setdefault("result_expires", 600)
    app = Celeriac("interop_canvas", broker=url, backend=url, **settings)
    for name, fn in _tasks("celeriac").items():
        app.task(name=name)(fn)
    return app


#: The queue a worker subprocess serves and sends continuations to (the fixtures set it).
QUEUE = os.environ.get("INTEROP_CANVAS_QUEUE", "interop.canvas")

celery_app = build_celery(task_default_queue=QUEUE)
celeriac_app = build_celeriac(task_default_queue=QUEUE)
