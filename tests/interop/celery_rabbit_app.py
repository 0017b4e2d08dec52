"""The real Celery's side of the RabbitMQ interop tests: ``celery worker -A tests.interop.celery_rabbit_app``.

Broker: the shared RabbitMQ (``INTEROP_AMQP_URL``); results: ``rpc://`` unless ``INTEROP_RESULTS`` names
another backend; queues declared with ``x-max-priority`` when ``INTEROP_MAX_PRIORITY`` is set (Celery's
``task_queue_max_priority``). Task names match ``celeriac_rabbit_app``'s; the tasks that record
themselves write to the Redis ledger of ``redis_fleet_tasks`` (``INTEROP_REDIS_URL``), so a test sees
which kind of worker ran what, and when, whichever broker carried it.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery  # type: ignore[import-untyped]

from tests.interop import redis_fleet_tasks as tasks
from tests.interop.redis_fleet_tasks import InteropError

AMQP_URL = os.environ.get("INTEROP_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
ADD, FAIL = "interop.rabbit.add", "interop.rabbit.fail"
WORK, FLAKY = "interop.rabbit.work", "interop.rabbit.flaky"
KIND = "celery"


def _max_priority() -> dict[str, Any]:
    value = os.environ.get("INTEROP_MAX_PRIORITY")
    return {"task_queue_max_priority": int(value)} if value else {}


def build(results: str | None = None, **settings: Any) -> Celery:
    """A Celery app on RabbitMQ with the interop tasks; results on ``results`` (default rpc://)."""
    backend = results or os.environ.get("INTEROP_RESULTS", "rpc://")
    app = Celery("interop_rabbit", broker=AMQP_URL, backend=backend, set_as_current=False)
    app.conf.update(
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_enable_remote_control=False,
        result_expires=600,
        **settings,
    )

    @app.task(name=ADD, shared=False)  # type: ignore[untyped-decorator]
    def add(x: int, y: int) -> dict[str, Any]:
        return {"sum": x + y, "kind": KIND}

    @app.task(name=FAIL, shared=False)  # type: ignore[untyped-decorator]
    def fail(error: str, message: str) -> None:
        if error == "ValueError":
            raise ValueError(message)
        raise InteropError(message, 42)

    @app.task(name=WORK, bind=True, shared=False)  # type: ignore[untyped-decorator]
    def work(self: Any, ledger: str, n: int, seconds: float = 0.0) -> int:
        return tasks.work(self.request.id, KIND, ledger, n, seconds)

    @app.task(name=FLAKY, bind=True, shared=False)  # type: ignore[untyped-decorator]
    def flaky(self: Any, ledger: str, times: int, countdown: float) -> dict[str, Any]:
        runs = tasks.attempts(ledger, self.request.id, KIND, self.request.retries)
        if runs <= times:
            raise self.retry(countdown=countdown)
        return {"runs": runs, "retries": self.request.retries, "kind": KIND}

    return app


app = build(**_max_priority())
