"""Events on the SQL brokers: since they broadcast (the ``celeriac_broadcast`` table), a worker on SQLite,
the embedded default, sends Celery's worker and task events like one on Redis."""

from __future__ import annotations

from pathlib import Path

from celeriac import Celeriac
from celeriac.testing import start_worker
from tests.unit.worker.test_events import Listener


def test_a_sqlite_worker_sends_worker_and_task_events(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/events.sqlite3"
    app = Celeriac("events", broker=url, backend="db+" + url)

    @app.task(name="add")
    def add(x: int, y: int) -> int:
        return x + y

    try:
        with Listener(app) as seen:
            with start_worker(app, hostname="sql@events", task_events=True, heartbeat_interval=0.5):
                result = app.send_task("add", [2, 3])
                assert result.get(timeout=10) == 5
                done = seen.wait_for("task-succeeded", uuid=result.id)
                seen.wait_for("task-received", uuid=result.id)
                seen.wait_for("task-started", uuid=result.id)
                online = seen.wait_for("worker-online", hostname="sql@events")
                beat = seen.wait_for("worker-heartbeat", hostname="sql@events", timeout=5)
            offline = seen.wait_for("worker-offline", hostname="sql@events")
    finally:
        app.close()
    assert done["result"] == "5" and done["hostname"] == "sql@events"
    assert online["clock"] < beat["clock"] < offline["clock"]
