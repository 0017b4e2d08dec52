"""celeriac's side of the Redis interop tests: an app whose tasks match ``celery_redis_app``.

A ``celeriac -A tests.interop.celeriac_redis_app worker`` subprocess uses the module's ``app``, on
the broker and backend named by ``INTEROP_REDIS_URL`` (the fixtures set it); tests build apps of
their own with ``build`` (clients, and in-process workers).
"""

from __future__ import annotations

from typing import Any

from celeriac import Celeriac, Task
from tests.interop import redis_fleet_tasks as tasks

KIND = "celeriac"


def _id(task: Task[..., Any]) -> str:
    task_id = task.request.id
    assert task_id is not None, "a worker always sets the request id"
    return task_id


def build(url: str = tasks.REDIS_URL, **settings: Any) -> Celeriac:
    """A celeriac app on ``url`` (broker and backend) with the interop tasks registered."""
    app = Celeriac("interop_redis", broker=url, backend=url, **settings)

    @app.task(name=tasks.WORK, bind=True)
    def work(self: Task[..., int], ledger: str, n: int, seconds: float = 0.0) -> int:
        return tasks.work(_id(self), KIND, ledger, n, seconds)

    @app.task(name=tasks.FAIL)
    def fail(error: str, message: str) -> None:
        tasks.fail(error, message)

    @app.task(name=tasks.FLAKY, bind=True)
    def flaky(self: Task[..., dict[str, Any]], ledger: str, times: int, countdown: float) -> dict[str, Any]:
        runs = tasks.attempts(ledger, _id(self), KIND, self.request.retries)
        if runs <= times:
            raise self.retry(countdown=countdown)
        return {"runs": runs, "retries": self.request.retries, "kind": KIND}

    return app


app = build()
