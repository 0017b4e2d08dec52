"""celeriac's side of the RabbitMQ interop tests: an app whose tasks match ``celery_rabbit_app``.

A ``celeriac -A tests.interop.celeriac_rabbit_app worker`` subprocess uses the module's ``app``: broker
``INTEROP_AMQP_URL``, results ``INTEROP_RESULTS`` (default ``rpc://``), ``task_queue_max_priority`` from
``INTEROP_MAX_PRIORITY``; tests build apps of their own with ``build`` (clients, in-process workers).
"""

from __future__ import annotations

import os
from typing import Any

from celeriac import Celeriac, Task
from tests.interop import redis_fleet_tasks as tasks
from tests.interop.celery_rabbit_app import ADD, AMQP_URL, FAIL, FLAKY, WORK
from tests.interop.redis_fleet_tasks import InteropError

KIND = "celeriac"


def _id(task: Task[..., Any]) -> str:
    task_id = task.request.id
    assert task_id is not None, "a worker always sets the request id"
    return task_id


def build(results: str | None = None, **settings: Any) -> Celeriac:
    """A celeriac app on RabbitMQ with the interop tasks; results on ``results`` (default rpc://)."""
    backend = results or os.environ.get("INTEROP_RESULTS", "rpc://")
    priority = os.environ.get("INTEROP_MAX_PRIORITY")
    if priority:
        settings.setdefault("task_queue_max_priority", int(priority))
    app = Celeriac("interop_rabbit", broker=AMQP_URL, backend=backend, **settings)

    @app.task(name=ADD)
    def add(x: int, y: int) -> dict[str, Any]:
        return {"sum": x + y, "kind": KIND}

    @app.task(name=FAIL)
    def fail(error: str, message: str) -> None:
        if error == "ValueError":
            raise ValueError(message)
        raise InteropError(message, 42)

    @app.task(name=WORK, bind=True)
    def work(self: Task[..., int], ledger: str, n: int, seconds: float = 0.0) -> int:
        return tasks.work(_id(self), KIND, ledger, n, seconds)

    @app.task(name=FLAKY, bind=True)
    def flaky(self: Task[..., dict[str, Any]], ledger: str, times: int, countdown: float) -> dict[str, Any]:
        runs = tasks.attempts(ledger, _id(self), KIND, self.request.retries)
        if runs <= times:
            raise self.retry(countdown=countdown)
        return {"runs": runs, "retries": self.request.retries, "kind": KIND}

    return app


app = build()
