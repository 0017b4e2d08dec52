"""``celeriac dead-letters list|show|requeue|purge`` against real brokers (a SQLite file, a private
redis-server), and the worker's dead-letter retention (``broker_dead_letter_max``/``_expires``)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from celeriac import Celery
from tests.integration.conftest import ROOT, WorkerProcess

MODULE = """
from celeriac import Celery

app = Celery("deadmod")

@app.task
def add(x, y):
    return x + y
"""


@pytest.fixture(params=["sqlite", "redis"])
def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A broker of the test's own: a fresh SQLite file, or a private redis-server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'dead.sqlite3'}"
    return str(request.getfixturevalue("redis_server")().url())


def celeriac(
    broker: str, cwd: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celeriac", "-A", "deadmod", "-b", broker, "dead-letters", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        input=stdin,
        env={**os.environ, "PYTHONPATH": f"{cwd}{os.pathsep}{ROOT}"},
    )


def bury(broker_url: str, letters: list[tuple[str, str, str]]) -> None:
    """Send ``deadmod.add(1, 2)`` per ``(queue, task id, reason)`` and dead-letter each, in that order."""
    app = Celery("deadmod", broker=broker_url, result_backend="disabled://")

    async def main() -> None:
        broker = app.broker()
        try:
            for queue, task_id, reason in letters:
                await app.asend_task("deadmod.add", (1, 2), task_id=task_id, queue=queue)
                [got] = await broker.fetch([queue], 1, 5.0)
                await broker.reject(got, requeue=False, reason=reason)
        finally:
            await broker.close()

    asyncio.run(main())


def sizes(broker_url: str, *queues: str) -> list[int]:
    app = Celery("deadmod", broker=broker_url, result_backend="disabled://")

    async def main() -> list[int]:
        broker = app.broker()
        try:
            return [await broker.size(queue) for queue in queues]
        finally:
            await broker.close()

    return asyncio.run(main())


def test_list_show_requeue_and_purge(broker_url: str, tmp_path: Path) -> None:
    (tmp_path / "deadmod.py").write_text(MODULE)
    bury(
        broker_url,
        [
            ("celery", "t-1", "ValueError: first\nmore lines"),
            ("celery", "t-2", "rejected by the task"),
            ("other", "t-3", "NotRegistered: deadmod.nope"),
        ],
    )

    done = celeriac(broker_url, tmp_path, "list")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:5] == ["TIME", "(UTC)", "QUEUE", "TASK", "ID"]
    assert [line.split()[4] for line in lines[1:4]] == ["t-3", "t-2", "t-1"]  # newest first
    assert "deadmod.add" in lines[1] and "NotRegistered: deadmod.nope" in lines[1]
    assert lines[3].endswith("ValueError: first")  # the reason's first line
    assert "3 dead letter(s)" in done.stdout

    listed = json.loads(celeriac(broker_url, tmp_path, "list", "--queue", "celery", "--json").stdout)
    assert [(d["id"], d["queue"], d["task"], d["args"]) for d in listed] == [
        ("t-2", "celery", "deadmod.add", [1, 2]),
        ("t-1", "celery", "deadmod.add", [1, 2]),
    ]
    assert listed[1]["reason"] == "ValueError: first\nmore lines"
    assert listed[0]["headers"]["id"] == "t-2" and abs(listed[0]["time"] - time.time()) < 120
    assert len(json.loads(celeriac(broker_url, tmp_path, "list", "--limit", "1", "--json").stdout)) == 1

    shown = celeriac(broker_url, tmp_path, "show", "t-1")
    assert shown.returncode == 0, shown.stderr
    assert "task:   deadmod.add" in shown.stdout and "queue:  celery" in shown.stdout
    assert "reason: ValueError: first\n        more lines" in shown.stdout
    assert "args: [1, 2]" in shown.stdout and "kwargs: {}" in shown.stdout
    assert '  task: "deadmod.add"' in shown.stdout  # the headers
    missing = celeriac(broker_url, tmp_path, "show", "t-404")
    assert missing.returncode == 1 and "no dead letter has task id 't-404'" in missing.stderr

    done = celeriac(broker_url, tmp_path, "requeue", "--id", "t-2")
    assert done.stdout.strip() == "requeued 1 dead letter(s)", done.stderr
    assert sizes(broker_url, "celery", "other") == [1, 0]
    done = celeriac(broker_url, tmp_path, "requeue", "--queue", "celery", "--limit", "5")
    assert done.stdout.strip() == "requeued 1 dead letter(s)", done.stderr
    assert sizes(broker_url, "celery", "other") == [2, 0]

    refused = celeriac(broker_url, tmp_path, "purge")
    assert refused.returncode == 2 and "every dead letter for good: pass --yes" in refused.stderr
    declined = celeriac(broker_url, tmp_path, "purge", "--keep", "0", stdin="n\n")
    assert declined.returncode == 2  # stdin is not a terminal: never a silent yes
    assert celeriac(broker_url, tmp_path, "purge", "--older-than", "3600", "--yes").stdout.strip() == (
        "deleted 0 dead letter(s)"
    )
    done = celeriac(broker_url, tmp_path, "purge", "--queue", "other", "--yes")
    assert done.stdout.strip() == "deleted 1 dead letter(s)", done.stderr
    assert celeriac(broker_url, tmp_path, "list").stdout.strip() == "no dead letters"

    bad = celeriac(broker_url, tmp_path, "list", "--limit", "-1")
    assert bad.returncode == 2 and "expected a whole number of 0 or more" in bad.stderr


def test_the_python_api_purges_by_age_and_count_across_queues(broker_url: str) -> None:
    """``app.purge_dead_letters`` with no queue: the broker-wide trim the worker's retention uses."""
    bury(broker_url, [("celery", "old-1", "x"), ("other", "old-2", "x")])
    time.sleep(1.5)
    bury(broker_url, [("celery", f"new-{n}", "x") for n in range(4)] + [("other", "new-o", "x")])
    app = Celery("deadmod", broker=broker_url, result_backend="disabled://")
    try:
        assert app.purge_dead_letters(older_than=3600) == 0
        assert app.purge_dead_letters(older_than=1.0) == 2
        assert app.purge_dead_letters(keep=3) == 2
        assert [d.task_id for d in app.dead_letters()] == ["new-o", "new-3", "new-2"]
        assert app.requeue_dead_letters(ids=["new-o"]) == 1
        assert [d.task_id for d in app.dead_letters()] == ["new-3", "new-2"]
        with pytest.raises(ValueError, match="keep must be 0 or more"):
            app.purge_dead_letters(keep=-2)
        assert app.purge_dead_letters(keep=0) == 2
        assert app.dead_letters() == []
    finally:
        app.close()


def test_a_worker_trims_an_overfull_dead_letter_store(broker_url: str, tmp_path: Path) -> None:
    """With ``broker_dead_letter_max``, a worker keeps the newest dead letters, soon after it starts."""
    (tmp_path / "deadmod.py").write_text(MODULE)
    bury(broker_url, [("celery", f"d-{n}", "poison") for n in range(30)])
    env = {
        **os.environ,
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}",
        "CELERIAC_BROKER_URL": broker_url,
        "CELERIAC_RESULT_BACKEND": "disabled://",
        "CELERIAC_BROKER_DEAD_LETTER_MAX": "20",
        "PYTHONUNBUFFERED": "1",
    }
    worker = WorkerProcess(env, ["-P", "threads", "-c", "1"], tmp_path / "w.log", app="deadmod")
    try:
        worker.start()
        worker.wait_for("deleted 10 dead letter(s) beyond broker_dead_letter_max (20)", timeout=30)
    finally:
        worker.stop()
    app = Celery("deadmod", broker=broker_url, result_backend="disabled://")
    try:
        assert [d.task_id for d in app.dead_letters()] == [f"d-{n}" for n in range(29, 9, -1)]
    finally:
        app.close()
