"""Results shared with Celery 5.7 through its database backend, both ways, on SQLite and PostgreSQL.

celeriac's SQL backend and Celery's ``db+`` backend keep results in the same ``celery_taskmeta`` table.
One way, a real celeriac worker (in-process, memory broker) runs tasks and stores their results, and
Celery's ``AsyncResult(id).get()`` reads them; the other way, Celery's backend stores results as its
worker would (``store_result``, ``mark_as_failure``, ``mark_as_revoked``) and celeriac reads them.

A Celery worker is not part of this: today celeriac has only its SQL and memory brokers, whose
layout Celery does not read, and kombu's ``memory://`` transport cannot be shared across processes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import celery.exceptions
import pytest
from celery import Celery
from celery.app.task import Context

import celeriac.exceptions
from celeriac import Celeriac
from celeriac.testing import start_worker

if TYPE_CHECKING:
    from tests.interop.conftest import ResultDB

WAIT = 10.0
POLL = 0.02

#: Return values that must come back equal and of the same type on the other side.
VALUES: dict[str, Any] = {
    "int": 5,
    "none": None,
    "text": "grüße ✓",
    "float": 2.5,
    "bool": True,
    "nested": {"a": [1, {"b": None}], "c": "d"},
    "datetime": datetime(2024, 1, 2, 3, 4, 5, 678, tzinfo=UTC),
    "decimal": Decimal("1.10"),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "bytes": b"raw",
}


class InteropError(Exception):
    """A user's own exception; both sides find its class by module and name (this module is loaded)."""


def _recent(moment: datetime | None) -> bool:
    """True when ``moment`` (naive means UTC, as in ``celery_taskmeta``) is within a minute of now."""
    assert moment is not None
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return abs(datetime.now(UTC) - aware) < timedelta(minutes=1)


# -- celeriac writes, Celery reads ----------------------------------------------------------------------


def test_celery_gets_values_returned_by_celeriac_tasks(
    result_db: ResultDB, make_celeriac: Callable[..., Celeriac], make_celery: Callable[..., Celery]
) -> None:
    app = make_celeriac(backend=result_db.url)

    @app.task(name="interop.echo")
    def echo(value: Any) -> Any:
        return value

    celery_app = make_celery(result_backend=result_db.url)
    with start_worker(app):
        sent = {key: echo.apply_async((value,), task_id=result_db.task_id()) for key, value in VALUES.items()}
        for key, value in VALUES.items():
            result = celery_app.AsyncResult(sent[key].id)
            got = result.get(timeout=WAIT, interval=POLL)
            assert (key, got) == (key, value)
            assert type(got) is type(value)
            assert result.state == "SUCCESS"
            assert _recent(result.date_done)


def test_celery_reraises_failures_of_celeriac_tasks_with_their_type(
    result_db: ResultDB, make_celeriac: Callable[..., Celeriac], make_celery: Callable[..., Celery]
) -> None:
    app = make_celeriac(backend=result_db.url)

    @app.task(name="interop.fail")
    def fail(kind: str) -> None:
        if kind == "builtin":
            raise ValueError("boom", 3)
        raise InteropError("custom")

    celery_app = make_celery(result_backend=result_db.url)
    with start_worker(app):
        builtin = celery_app.AsyncResult(fail.apply_async(("builtin",), task_id=result_db.task_id()).id)
        custom = celery_app.AsyncResult(fail.apply_async(("custom",), task_id=result_db.task_id()).id)
        with pytest.raises(ValueError) as raised:
            builtin.get(timeout=WAIT, interval=POLL)
        assert type(raised.value) is ValueError
        assert raised.value.args == ("boom", 3)
        with pytest.raises(InteropError, match="custom"):
            custom.get(timeout=WAIT, interval=POLL)

    assert builtin.state == "FAILURE"
    assert builtin.traceback is not None
    assert "ValueError: ('boom', 3)" in builtin.traceback
    assert isinstance(builtin.get(propagate=False), ValueError)
    assert _recent(builtin.date_done)


def test_celery_reads_extended_fields_written_by_celeriac(
    result_db: ResultDB, make_celeriac: Callable[..., Celeriac], make_celery: Callable[..., Celery]
) -> None:
    app = make_celeriac(backend=result_db.url, result_extended=True)

    @app.task(name="interop.add_once_retried", bind=True)
    def add(self: Any, x: int, y: int, *, z: int = 0) -> int:
        if self.request.retries == 0:
            raise self.retry(countdown=0)
        return x + y + z

    celery_app = make_celery(result_backend=result_db.url, result_extended=True)
    with start_worker(app, queues=["interop-q"]) as worker:
        result = celery_app.AsyncResult(
            add.apply_async((2, 3), {"z": 4}, task_id=result_db.task_id(), queue="interop-q").id
        )
        assert result.get(timeout=WAIT, interval=POLL) == 9
    assert result.name == "interop.add_once_retried"
    assert result.args == [2, 3]
    assert result.kwargs == {"z": 4}
    assert result.worker == worker.hostname
    assert result.retries == 1
    assert result.queue == "interop-q"


def test_celery_reads_children_of_a_celeriac_task(
    result_db: ResultDB, make_celeriac: Callable[..., Celeriac], make_celery: Callable[..., Celery]
) -> None:
    app = make_celeriac(backend=result_db.url)

    @app.task(name="interop.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="interop.spawn")
    def spawn(child_id: str) -> str:
        add.apply_async((1, 2), task_id=child_id)
        return "spawned"

    celery_app = make_celery(result_backend=result_db.url)
    child_id = result_db.task_id()
    with start_worker(app):
        parent = celery_app.AsyncResult(spawn.apply_async((child_id,), task_id=result_db.task_id()).id)
        assert parent.get(timeout=WAIT, interval=POLL) == "spawned"
        assert [child.id for child in parent.children] == [child_id]
        assert parent.children[0].get(timeout=WAIT, interval=POLL) == 3


def test_celery_sees_a_celeriac_revoke_as_its_task_revoked_error(
    result_db: ResultDB, make_celeriac: Callable[..., Celeriac], make_celery: Callable[..., Celery]
) -> None:
    # Celery's users catch celery.exceptions.TaskRevokedError; Celery's worker stores it with
    # exc_module "celery.exceptions", and Celery rebuilds the class from that module.
    app = make_celeriac(backend=result_db.url)
    task_id = result_db.task_id()
    app.AsyncResult(task_id).revoke()

    result = make_celery(result_backend=result_db.url).AsyncResult(task_id)
    assert result.state == "REVOKED"
    with pytest.raises(celery.exceptions.TaskRevokedError):
        result.get(timeout=WAIT, interval=POLL)


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        ({"time_limit": 0.2}, celery.exceptions.TimeLimitExceeded),
        ({"soft_time_limit": 0.2}, celery.exceptions.SoftTimeLimitExceeded),
    ],
    ids=["hard", "soft"],
)
def test_celery_sees_a_celeriac_time_limit_as_its_own_error(
    result_db: ResultDB,
    make_celeriac: Callable[..., Celeriac],
    make_celery: Callable[..., Celery],
    limit: dict[str, float],
    expected: type[BaseException],
) -> None:
    app = make_celeriac(backend=result_db.url)

    @app.task(name="interop.slow")
    def slow() -> None:
        for _ in range(100):
            time.sleep(0.02)

    celery_app = make_celery(result_backend=result_db.url)
    with start_worker(app):
        result = celery_app.AsyncResult(slow.apply_async(task_id=result_db.task_id(), **limit).id)
        with pytest.raises(expected):
            result.get(timeout=WAIT, interval=POLL)


# -- Celery writes, celeriac reads ----------------------------------------------------------------------


def test_celeriac_gets_values_stored_by_celery(
    result_db: ResultDB, make_celeriac: Callable[..., Celeriac], make_celery: Callable[..., Celery]
) -> None:
    backend = make_celery(result_backend=result_db.url).backend
    ids = {key: result_db.task_id() for key in VALUES}
    for key, value in VALUES.items():
        backend.store_result(ids[key], value, "SUCCESS")

    app = make_celeriac(backend=result_db.url)
    for key, value in VALUES.items():
        result = app.AsyncResult(ids[key])
        got = result.get(timeout=WAIT)
        assert (key, got) == (key, value)
        assert type(got) is type(value)
        assert result.state == "SUCCESS"
        assert _recent(result.date_done)


def test_celeriac_reraises_failures_stored_by_celery_with_their_type(
    result_db: ResultDB, make_celeriac: Callable[..., Celeriac], make_celery: Callable[..., Celery]
) -> None:
    backend = make_celery(result_backend=result_db.url).backend
    stored, marked, custom = (result_db.task_id() for _ in range(3))
    backend.store_result(stored, ValueError("bad", 1), "FAILURE", traceback="Traceback: ValueError")
    backend.mark_as_failure(marked, KeyError("k"))
    backend.mark_as_failure(custom, InteropError("custom"))

    app = make_celeriac(backend=result_db.url)
    with pytest.raises(ValueError) as raised:
        app.AsyncResult(stored).get(timeout=WAIT)
    assert type(raised.value) is ValueError
    assert raised.value.args == ("bad", 1)
    assert app.AsyncResult(stored).state == "FAILURE"
    assert app.AsyncResult(stored).traceback == "Traceback: ValueError"
    assert _recent(app.AsyncResult(stored).date_done)
    with pytest.raises(KeyError):
        app.AsyncResult(marked).get(timeout=WAIT)
    with pytest.raises(InteropError, match="custom"):
        app.AsyncResult(custom).get(timeout=WAIT)


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        # What Celery's worker stores when a task hits its limits or its process dies; the first
        # three classes live in billiard.exceptions (celery.exceptions re-exports them).
        (celery.exceptions.TimeLimitExceeded(30), celeriac.exceptions.TimeLimitExceeded),
        (celery.exceptions.SoftTimeLimitExceeded(), celeriac.exceptions.SoftTimeLimitExceeded),
        (celery.exceptions.WorkerLostError("lost"), celeriac.exceptions.WorkerLostError),
        (celery.exceptions.MaxRetriesExceededError("max"), celeriac.exceptions.MaxRetriesExceededError),
    ],
    ids=["TimeLimitExceeded", "SoftTimeLimitExceeded", "WorkerLostError", "MaxRetriesExceededError"],
)
def test_celeriac_reraises_celery_worker_errors_as_its_twins(
    result_db: ResultDB,
    make_celeriac: Callable[..., Celeriac],
    make_celery: Callable[..., Celery],
    stored: BaseException,
    expected: type[BaseException],
) -> None:
    task_id = result_db.task_id()
    make_celery(result_backend=result_db.url).backend.mark_as_failure(task_id, stored)

    with pytest.raises(expected):
        make_celeriac(backend=result_db.url).AsyncResult(task_id).get(timeout=WAIT)


def test_celeriac_sees_a_celery_revoke_as_task_revoked_error(
    result_db: ResultDB, make_celeriac: Callable[..., Celeriac], make_celery: Callable[..., Celery]
) -> None:
    task_id = result_db.task_id()
    make_celery(result_backend=result_db.url).backend.mark_as_revoked(task_id, reason="revoked")

    result = make_celeriac(backend=result_db.url).AsyncResult(task_id)
    assert result.state == "REVOKED"
    with pytest.raises(celeriac.exceptions.TaskRevokedError, match="revoked"):
        result.get(timeout=WAIT)


def test_celeriac_reads_extended_fields_and_children_stored_by_celery(
    result_db: ResultDB, make_celeriac: Callable[..., Celeriac], make_celery: Callable[..., Celery]
) -> None:
    celery_app = make_celery(result_backend=result_db.url, result_extended=True)
    task_id, child_id = result_db.task_id(), result_db.task_id()
    request = Context(
        id=task_id,
        task="interop.add",
        args=[2, 3],
        kwargs={"z": 4},
        hostname="celery@host",
        retries=2,
        delivery_info={"exchange": "", "routing_key": "interop-q"},
    )
    request.children.append(celery_app.AsyncResult(child_id))  # as Celery's apply_async does in a task
    celery_app.backend.store_result(task_id, 9, "SUCCESS", request=request)

    result = make_celeriac(backend=result_db.url).AsyncResult(task_id)
    assert result.get(timeout=WAIT) == 9
    assert result.meta().extended == {
        "name": "interop.add",
        "args": [2, 3],
        "kwargs": {"z": 4},
        "worker": "celery@host",
        "retries": 2,
        "queue": "interop-q",
    }
    assert [child.id for child in result.children] == [child_id]


def test_celeriac_sees_a_result_forgotten_by_celery(
    result_db: ResultDB, make_celeriac: Callable[..., Celeriac], make_celery: Callable[..., Celery]
) -> None:
    celery_app = make_celery(result_backend=result_db.url)
    task_id = result_db.task_id()
    celery_app.backend.store_result(task_id, 1, "SUCCESS")
    app = make_celeriac(backend=result_db.url)
    assert app.AsyncResult(task_id).get(timeout=WAIT) == 1

    celery_app.AsyncResult(task_id).forget()

    assert app.AsyncResult(task_id).state == "PENDING"


def test_celery_sees_a_result_forgotten_by_celeriac(
    result_db: ResultDB, make_celeriac: Callable[..., Celeriac], make_celery: Callable[..., Celery]
) -> None:
    celery_app = make_celery(result_backend=result_db.url)
    task_id = result_db.task_id()
    celery_app.backend.store_result(task_id, 2, "SUCCESS")

    make_celeriac(backend=result_db.url).AsyncResult(task_id).forget()

    assert celery_app.AsyncResult(task_id).state == "PENDING"
