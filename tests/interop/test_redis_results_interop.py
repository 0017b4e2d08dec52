"""Results shared with Celery 5.7 through its Redis backend, both ways.

celeriac's Redis backend and Celery's ``redis://`` backend keep a task's record in the key
``celery-task-meta-<id>`` (no ``global_keyprefix`` on either side here). One way, a real celeriac worker
(in-process, memory broker) runs tasks and stores their results, and Celery's ``AsyncResult(id).get()``
reads them (Celery waits by pub/sub, so this also checks what celeriac publishes); the other way,
Celery's backend stores results as its worker would and celeriac reads them.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from celery import Celery

from celeriac import Celeriac, states
from celeriac.testing import start_worker
from tests.interop.conftest import require_redis

REDIS = "redis://127.0.0.1:6379/14"
# Celery 5.7's Redis backend still calls redis-py's SETEX, which redis-py 8 marks deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")
WAIT = 10.0


class TaskIds:
    """Fresh task ids whose Redis keys are deleted after the test."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def __call__(self) -> str:
        task_id = f"interop-{uuid.uuid4()}"
        self.ids.append(task_id)
        return task_id


@pytest.fixture
def task_ids() -> Iterator[TaskIds]:
    require_redis()
    import redis

    ids = TaskIds()
    yield ids
    client = redis.Redis.from_url(REDIS)
    try:
        if ids.ids:
            client.delete(*(f"celery-task-meta-{t}" for t in ids.ids))
    finally:
        client.close()


def test_celery_reads_results_celeriac_stored(
    task_ids: TaskIds, make_celeriac: Callable[..., Celeriac], make_celery: Callable[..., Celery]
) -> None:
    app = make_celeriac(backend=REDIS)

    @app.task(name="interop.echo")
    def echo(value: Any) -> Any:
        return value

    @app.task(name="interop.fail")
    def fail(message: str) -> None:
        raise ValueError(message)

    celery_app = make_celery(result_backend=REDIS)
    with start_worker(app):
        value = {"a": [1, {"b": None}], "c": "grüße"}
        ok = echo.apply_async((value,), task_id=task_ids())
        failed = fail.apply_async(("boom",), task_id=task_ids())
        assert celery_app.AsyncResult(ok.id).get(timeout=WAIT) == value
        with pytest.raises(ValueError, match="boom") as raised:
            celery_app.AsyncResult(failed.id).get(timeout=WAIT)
        assert type(raised.value) is ValueError
        assert celery_app.AsyncResult(failed.id).state == "FAILURE"


def test_celeriac_reads_results_celery_stored(
    task_ids: TaskIds, make_celeriac: Callable[..., Celeriac], make_celery: Callable[..., Celery]
) -> None:
    backend = make_celery(result_backend=REDIS).backend
    stored, failed = task_ids(), task_ids()
    backend.store_result(stored, {"total": 5}, "SUCCESS")
    backend.mark_as_failure(failed, ValueError("bad", 1))

    app = make_celeriac(backend=REDIS)
    assert app.AsyncResult(stored).get(timeout=WAIT) == {"total": 5}
    assert app.AsyncResult(stored).state == states.SUCCESS
    with pytest.raises(ValueError) as raised:
        app.AsyncResult(failed).get(timeout=WAIT)
    assert type(raised.value) is ValueError
    assert raised.value.args == ("bad", 1)
    assert app.AsyncResult(failed).state == states.FAILURE


def test_celery_reads_the_progress_a_celeriac_task_reports_while_it_runs(
    task_ids: TaskIds, make_celeriac: Callable[..., Celeriac], make_celery: Callable[..., Celery]
) -> None:
    app = make_celeriac(backend=REDIS)
    go = threading.Event()

    @app.task(name="interop.steps", bind=True)
    def steps(self: Any) -> str:
        self.update_state(state="PROGRESS", meta={"current": 1, "total": 2})
        go.wait(WAIT)
        return "done"

    celery_app = make_celery(result_backend=REDIS)
    with start_worker(app):
        running = steps.apply_async(task_id=task_ids())
        seen = celery_app.AsyncResult(running.id)
        deadline = time.monotonic() + WAIT
        while seen.state != "PROGRESS" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (seen.state, seen.info) == ("PROGRESS", {"current": 1, "total": 2})
        go.set()
        assert seen.get(timeout=WAIT) == "done"
        assert seen.state == "SUCCESS"


def test_date_done_is_written_in_the_writers_zone_on_both_sides(
    task_ids: TaskIds, make_celeriac: Callable[..., Celeriac], make_celery: Callable[..., Celery]
) -> None:
    # Celery's backend writes date_done as app.now().isoformat(): the writing app's zone.
    kolkata = timedelta(hours=5, minutes=30)
    app = make_celeriac(backend=REDIS, timezone="Asia/Kolkata")

    @app.task(name="interop.echo")
    def echo(value: Any) -> Any:
        return value

    celery_app = make_celery(result_backend=REDIS, timezone="America/New_York")
    with start_worker(app):
        ours = echo.apply_async((1,), task_id=task_ids())
        assert celery_app.AsyncResult(ours.id).get(timeout=WAIT) == 1
    done = celery_app.AsyncResult(ours.id).date_done
    assert done.utcoffset() == kolkata and abs(done - datetime.now(UTC)) < timedelta(minutes=1)

    theirs = task_ids()
    celery_app.backend.store_result(theirs, 2, "SUCCESS")
    done = app.AsyncResult(theirs).date_done
    assert done is not None and done.utcoffset() in (timedelta(hours=-5), timedelta(hours=-4))
    assert abs(done - datetime.now(UTC)) < timedelta(minutes=1)
