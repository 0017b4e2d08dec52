"""A worker paused (SIGSTOP) past its lease while it runs a task: the message goes to another worker,
which runs it again; when the paused one resumes and its run ends, that late run must not overwrite
the newer result nor settle the message the other worker now holds, and it says its lease was lost."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration import appmod
from tests.integration.conftest import WorkerProcess, ledger, log_of, wait_until
from tests.servers import RedisServer

pytestmark = pytest.mark.slow

LEASE_SECONDS = 2.0


@pytest.fixture(params=["redis", "sqlite"])
def worker_env(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    if request.param == "redis":
        redis_server: Callable[..., RedisServer] = request.getfixturevalue("redis_server")
        url = redis_server().url()
        backend = url
    else:
        url = f"sqlite:///{tmp_path / 'paused.sqlite3'}"
        backend = "db+" + url
    values = {
        "CELERIAC_BROKER_URL": url,
        "CELERIAC_RESULT_BACKEND": backend,
        "CELERIAC_BROKER_LEASE_SECONDS": str(LEASE_SECONDS),
        "LEDGER_PATH": str(tmp_path / "ledger.txt"),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **values, "PYTHONUNBUFFERED": "1"}


def stats_of(app: Any, name: str) -> dict[str, Any]:
    found = app.control.inspect([f"{name}@test"], timeout=3.0).stats() or {}
    return found[f"{name}@test"]  # type: ignore[no-any-return]


def test_a_late_run_after_a_lost_lease_is_fenced_logged_and_counted(
    app: Any, start_worker: Callable[..., WorkerProcess], worker_env: dict[str, str]
) -> None:
    paused = start_worker("-c", "1", "-P", "threads", name="paused")
    assert paused.proc is not None
    result = appmod.whose.delay(1.5)
    paused.wait_for("received", timeout=20)
    time.sleep(0.3)  # inside the task's sleep
    os.kill(paused.proc.pid, signal.SIGSTOP)
    try:
        # Its lease runs out; another worker takes the message and runs the task again.
        other = start_worker("-c", "1", "-P", "threads", name="other")
        assert other.proc is not None
        assert result.get(timeout=30) == other.proc.pid, log_of(other)
    finally:
        os.kill(paused.proc.pid, signal.SIGCONT)
    # The paused run ends too (both runs wrote their ledger line: at least once, as promised) ...
    assert wait_until(lambda: ledger(worker_env)[result.id] == 2, 10), log_of(paused)
    paused.wait_for("lost its message's lease", timeout=10)
    time.sleep(0.5)  # what it would have written, it has written by now
    # ... but its result does not replace the newer run's, and it says why.
    assert app.AsyncResult(result.id).result == other.proc.pid
    text = log_of(paused)
    assert f"whose[{result.id}]" in text.split("lost its message's lease")[0].splitlines()[-1], text[-2000:]
    assert f"whose[{result.id}] succeeded" not in text, text[-2000:]
    assert stats_of(app, "paused")["counts"]["lease_lost"] == 1
    assert stats_of(app, "other")["counts"]["lease_lost"] == 0
    # Neither worker holds the message any more, and nothing runs it a third time.
    time.sleep(LEASE_SECONDS + 1.0)
    assert ledger(worker_env)[result.id] == 2
    assert paused.terminate() == 0 and other.terminate() == 0
