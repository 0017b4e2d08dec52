"""Fixtures that put the real Celery on the other end: fresh Celery apps, result databases, kombu's wire.

Every test gets its own Celery app (closed afterwards, its kombu ``memory://`` queue deleted), so no
setting leaks from one test to the next. Result databases are a private SQLite file, or the shared
``test`` database of the local PostgreSQL, where each test uses task ids of its own and deletes their
rows afterwards. When PostgreSQL does not answer, its tests are skipped, except under ``CI=true``, where
they fail.
"""

from __future__ import annotations

import functools
import importlib.util
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery  # type: ignore[import-untyped]

from celeriac import Celeriac
from celeriac.memory import broker as memory_broker
from celeriac.sql.backend import task_meta
from celeriac.sql.database import engine_url
from tests.servers import service_missing

POSTGRES = ("127.0.0.1", 5432, "postgresql+psycopg://root@127.0.0.1:5432/test")


@functools.cache
def _postgres_unavailable() -> str | None:
    host, port, _ = POSTGRES
    if importlib.util.find_spec("psycopg") is None:
        return "PostgreSQL interop tests need the psycopg driver (uv sync --group dev)"
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError as exc:
        return f"PostgreSQL is not answering on {host}:{port} ({exc})"
    return None


def require_redis() -> None:
    """Skip when the shared Redis on 127.0.0.1:6379 does not answer; under ``CI=true`` fail instead."""
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError as exc:
        reason = f"redis is not answering on 127.0.0.1:6379 ({exc})"
        service_missing(reason)


class ResultDB:
    """One result database for one test: its URL, and the task ids whose rows the test leaves behind."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.url = url
        self.task_ids: list[str] = []

    def task_id(self) -> str:
        """A fresh task id, deleted from the database after the test."""
        task_id = f"interop-{uuid.uuid4()}"
        self.task_ids.append(task_id)
        return task_id

    def track(self, task_id: str) -> str:
        """Delete this task id's row after the test too (an id made by the code under test)."""
        self.task_ids.append(task_id)
        return task_id

    def clean(self) -> None:
        if self.kind == "sqlite" or not self.task_ids:
            return  # the SQLite file goes with tmp_path
        engine = sa.create_engine(engine_url(self.url))
        try:
            with engine.begin() as conn:
                if sa.inspect(conn).has_table(task_meta.name):
                    conn.execute(task_meta.delete().where(task_meta.c.task_id.in_(self.task_ids)))
        finally:
            engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def result_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ResultDB]:
    """A database both Celery's ``db+`` backend and celeriac's SQL backend use for results."""
    kind = request.param
    if kind == "sqlite":
        db = ResultDB(kind, f"db+sqlite:///{tmp_path}/results.sqlite3")
    else:
        reason = _postgres_unavailable()
        if reason is not None:
            service_missing(reason)
        db = ResultDB(kind, "db+" + POSTGRES[2])
    yield db
    db.clean()


@pytest.fixture
def make_celery() -> Iterator[Callable[..., Celery]]:
    """Make a fresh Celery app on kombu's ``memory://`` transport, with a default queue of its own.

    Settings are Celery's (``result_backend=...``, ``result_extended=True``). Tasks must be declared
    with ``shared=False``: a shared task is added to every Celery app made later in the process.
    """
    made: list[Celery] = []

    def make(**settings: Any) -> Celery:
        app = Celery("interop", set_as_current=False)
        app.conf.update(
            broker_url="memory://",
            task_default_queue=f"interop-{uuid.uuid4().hex[:12]}",
            **settings,
        )
        made.append(app)
        return app

    yield make
    for app in made:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(app.conf.task_default_queue)
        close_celery(app)


def close_celery(app: Celery) -> None:
    """Close a Celery app, and the pub/sub connection its Redis result backend opens for ``get()``,
    which Celery 5.7 never closes itself, and reopens when a garbage-collected AsyncResult unsubscribes
    (left open, it surfaces later as an unclosed socket in some other test)."""
    backend = app.backend if "redis" in str(app.conf.result_backend or "") else None
    consumer = getattr(backend, "result_consumer", None)
    pubsub = getattr(consumer, "_pubsub", None)
    if pubsub is not None:
        # Forgotten first: Celery's AsyncResult.__del__ unsubscribes later, which would reconnect.
        consumer.subscribed_to.clear()
        consumer._pubsub = None
        pubsub.close()
    client = getattr(backend, "client", None)
    if client is not None:
        client.connection_pool.disconnect()
    app.close()


@pytest.fixture
def make_celeriac() -> Iterator[Callable[..., Celeriac]]:
    """Make a fresh celeriac app on a private memory broker; settings are celeriac's."""
    made: list[Celeriac] = []

    def make(**settings: Any) -> Celeriac:
        settings.setdefault("broker", f"memory://interop-{uuid.uuid4().hex[:12]}")
        app = Celeriac("interop", **settings)
        made.append(app)
        return app

    yield make
    for app in made:
        app.close()
        memory_broker.reset(app.broker_url)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the logs of worker subprocesses to a failing test's report.

    A fixture value with an ``interop_logs()`` method (name, text pairs) offers its logs this way.
    """
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if not report.failed:
        return
    for value in getattr(item, "funcargs", {}).values():
        logs = getattr(value, "interop_logs", None)
        if callable(logs):
            for name, text in logs():
                report.sections.append((f"log of {name}", text[-30000:]))
