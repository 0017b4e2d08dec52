"""The real Celery's side of the Redis interop tests: an app whose tasks match ``celeriac_redis_app``.

A ``celery worker -A tests.interop.celery_redis_app`` subprocess uses the module's ``app``, on the
broker and backend named by ``INTEROP_REDIS_URL`` (the fixtures set it); tests build client apps
of their own with ``build``.
"""

from __future__ import annotations

from typing import Any

from celery import Celery  # type: ignore[import-untyped]

from tests.interop import redis_fleet_tasks as tasks

KIND = "celery"


def build(url: str = tasks.REDIS_URL, **settings: Any) -> Celery:
    """A Celery app on ``url`` (broker and backend) with the interop tasks registered."""
    app = Celery("interop_redis", broker=url, backend=url, set_as_current=False)
    app.conf.update(
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_enable_remote_control=False,
        result_expires=600,
        **settings,
    )

    @app.task(name=tasks.WORK, bind=True, shared=False)  # type: ignore[untyped-decorator]
    def work(self: Any, ledger: str, n: int, seconds: float = 0.0) -> int:
        return tasks.work(self.request.id, KIND, ledger, n, seconds)

    @app.task(name=tasks.FAIL, shared=False)  # type: ignore[untyped-decorator]
    def fail(error: str, message: str) -> None:
        tasks.fail(error, message)

    @app.task(name=tasks.FLAKY, bind=True, shared=False)  # type: ignore[untyped-decorator]
    def flaky(self: Any, ledger: str, times: int, countdown: float) -> dict[str, Any]:
        runs = tasks.attempts(ledger, self.request.id, KIND, self.request.retries)
        if runs <= times:
            raise self.retry(countdown=countdown)
        return {"runs": runs, "retries": self.request.retries, "kind": KIND}

    return app


app = build()
