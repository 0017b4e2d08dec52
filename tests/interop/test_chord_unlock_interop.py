"""A Celery client's chord on a SQL result backend, run by our worker.

Celery counts chords natively only on Redis; on a database backend its client sends the polling task
``celery.chord_unlock`` with the header's result tuples. Our worker provides that task under Celery's name:
it waits for the header, then sends the body, or fails it with ChordError.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from celery import Celery
from celery import chord as celery_chord

from celeriac import Celeriac
from celeriac.testing import start_worker
from tests.interop.conftest import ResultDB, close_celery, require_redis

BROKER = "redis://127.0.0.1:6379/13"


def _apps(result_db: ResultDB, queue: str) -> tuple[Celery, Celeriac]:
    client = Celery("unlock", set_as_current=False)
    client.conf.update(broker_url=BROKER, result_backend=result_db.url, task_default_queue=queue)
    ours = Celeriac("unlock", broker=BROKER, backend=result_db.url)
    ours.conf.task_default_queue = queue
    return client, ours


def _declare(app: Any, **extra: Any) -> dict[str, Any]:
    def add(x: int, y: int) -> int:
        return x + y

    def total(values: list[int]) -> int:
        return sum(values)

    def boom(*args: Any) -> None:
        raise ValueError("boom")

    options = {"shared": False} if isinstance(app, Celery) else {}
    return {fn.__name__: app.task(name=f"unlock.{fn.__name__}", **options)(fn) for fn in (add, total, boom)}


@pytest.mark.parametrize("fails", [False, True], ids=["completes", "header-fails"])
def test_a_celery_clients_chord_on_a_sql_backend(result_db: ResultDB, fails: bool) -> None:
    require_redis()
    client, ours = _apps(result_db, f"unlock-{uuid.uuid4().hex[:10]}")
    theirs, _ = _declare(client), _declare(ours)
    try:
        with start_worker(ours, concurrency=4):
            header = [theirs["add"].s(i, i) for i in range(5)]
            if fails:
                header.append(theirs["boom"].s())
            result = celery_chord(header, theirs["total"].s()).apply_async()
            for member in result.parent.results:
                result_db.track(member.id)
            result_db.track(result.id)
            if fails:
                # Celery's get() raises a failed parent first; the body's own record is a ChordError.
                with pytest.raises(Exception, match="boom") as caught:
                    result.get(timeout=30, follow_parents=False)
                assert type(caught.value).__name__ == "ChordError"
            else:
                assert result.get(timeout=30) == 20
    finally:
        close_celery(client)
        ours.close()
