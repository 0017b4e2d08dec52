"""Pools under remote control with real ``celeriac worker`` processes, on Redis (a private server) and
SQLite: a running task terminated on every pool; the pool grown and shrunk
(``inspect stats`` and the tasks actually run at once say so); ``--autoscale`` growing under a backlog
and shrinking when quiet; and the signals of that work fired in the process that runs the task."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac import states
from celeriac.exceptions import TaskRevokedError
from tests.integration.conftest import WorkerProcess, log_of, wait_until
from tests.servers import RedisServer

pytestmark = pytest.mark.slow


@pytest.fixture(params=["redis", "sqlite"])
def worker_env(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_server: Callable[..., RedisServer],
) -> Iterator[dict[str, str]]:
    if request.param == "redis":
        url = redis_server().url()
        broker, backend = url, url
    else:
        sqlite = f"sqlite:///{tmp_path}/pools.sqlite3"
        broker, backend = sqlite, "db+" + sqlite
    values = {
        "CELERIAC_BROKER_URL": broker,
        "CELERIAC_RESULT_BACKEND": backend,
        "CELERIAC_BROKER_LEASE_SECONDS": "2",
        "CELERIAC_WORKER_AUTOSCALER_KEEPALIVE": "2",
        "SIGNAL_LOG": str(tmp_path / "signals.jsonl"),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    yield {**os.environ, **values, "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def poolsapp(worker_env: dict[str, str]) -> Iterator[Any]:
    from celeriac.config import Settings
    from tests.integration import poolsapp

    poolsapp.app.conf = Settings()  # read the test's CELERIAC_* variables
    poolsapp.app._router = None
    poolsapp.app._brokers.clear()
    poolsapp.app._backends.clear()
    yield poolsapp
    poolsapp.app.close()


@pytest.fixture
def start(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start_worker(*args: str, env: dict[str, str] | None = None) -> WorkerProcess:
        name = f"pools{uuid.uuid4().hex[:6]}"
        worker = WorkerProcess(
            env or worker_env,
            ["-n", f"{name}@test", *args],
            tmp_path / f"{name}.log",
            app="tests.integration.poolsapp",
        )
        worker.node = f"{name}@test"  # type: ignore[attr-defined]
        started.append(worker)
        worker.start()
        return worker

    yield start_worker
    for worker in started:
        worker.stop()


def noted(env: dict[str, str], name: str) -> list[dict[str, Any]]:
    """What the receivers of ``poolsapp`` noted for signal ``name``, in order."""
    path = Path(env["SIGNAL_LOG"])
    lines = path.read_text().splitlines() if path.exists() else []
    return [entry for entry in map(json.loads, lines) if entry["signal"] == name]


def listening(app: Any, node: str) -> Any:
    """The worker's inspect handle, once it answers (its subscription may come after it logged ready)."""
    inspect = app.control.inspect([node], timeout=1.0)
    assert wait_until(lambda: inspect.ping(), 20)
    return inspect


def one(app: Any, node: str, command: str, **arguments: Any) -> Any:
    return app.control.broadcast(command, arguments, [node], reply=True, timeout=5)[0][node]


@pytest.mark.parametrize("pool", ["threads", "async", "solo", "processes"])
def test_terminate_stops_a_running_task_within_a_second(
    poolsapp: Any, start: Callable[..., WorkerProcess], worker_env: dict[str, str], pool: str
) -> None:
    worker = start("-P", pool, "-c", "1")
    node = worker.node  # type: ignore[attr-defined]
    inspect = listening(poolsapp.app, node)
    for task in (poolsapp.spin, poolsapp.asleep):
        if pool == "processes":  # the child killed for the first task is replaced first
            assert wait_until(lambda: len(inspect.stats()[node]["pool"]["processes"]) == 1, 30)
        result = task.delay(60)
        assert wait_until(lambda: inspect.active()[node], 20), log_of(worker)
        began = time.monotonic()
        replies = poolsapp.app.control.revoke(result.id, [node], terminate=True, reply=True)
        assert replies == [{node: {"ok": f"terminate: {result.id}"}}]
        assert wait_until(lambda: result.state == states.REVOKED, 5)  # noqa: B023
        took = time.monotonic() - began
        print(f"{pool} pool, {task.name}: REVOKED {1000 * took:.0f} ms after the terminate was sent")
        assert took < 1.0
        assert wait_until(lambda: inspect.active()[node] == [], 5)
        # The client recorded "revoked" before it broadcast; the worker's "terminated" may come later.
        with pytest.raises(TaskRevokedError, match=r"revoked|terminated"):
            result.get(timeout=5)
    assert poolsapp.add.delay(2, 3).get(timeout=20) == 5  # the slot serves again
    revoked = noted(worker_env, "task_revoked")
    # the processes pool kills the child (children ignore SIGTERM); the others send no signal
    signum = signal.SIGKILL if pool == "processes" else signal.SIGTERM
    assert [(r["terminated"], r["signum"], r["expired"]) for r in revoked] == [(True, signum, False)] * 2
    assert worker.proc is not None and {r["pid"] for r in revoked} == {worker.proc.pid}
    assert worker.terminate() == 0


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_pool_grow_and_shrink_change_the_pool_and_stats(
    poolsapp: Any, start: Callable[..., WorkerProcess], pool: str
) -> None:
    worker = start("-P", pool, "-c", "1")
    node = worker.node  # type: ignore[attr-defined]
    inspect = listening(poolsapp.app, node)
    assert one(poolsapp.app, node, "pool_grow", n=2) == {"ok": "pool will grow"}
    stats = inspect.stats()[node]
    assert stats["pool"]["max-concurrency"] == 3 and stats["prefetch_count"] == 3
    if pool == "processes":
        assert wait_until(lambda: len(inspect.stats()[node]["pool"]["processes"]) == 3, 30)
    else:
        assert stats["pool"]["threads"] == 3
    began = time.monotonic()
    results = [poolsapp.spin.delay(1.0) for _ in range(3)]
    assert [r.get(timeout=30) for r in results] == ["finished"] * 3
    print(f"{pool}: 3 one-second tasks on a pool grown to 3 took {time.monotonic() - began:.2f}s")
    assert time.monotonic() - began < 2.9  # all three at once: one slot would take 3 s or more
    assert one(poolsapp.app, node, "pool_shrink", n=2) == {"ok": "pool will shrink"}
    assert inspect.stats()[node]["pool"]["max-concurrency"] == 1
    if pool == "processes":
        assert wait_until(lambda: len(inspect.stats()[node]["pool"]["processes"]) == 1, 30)
    began = time.monotonic()
    results = [poolsapp.spin.delay(0.5) for _ in range(3)]
    assert [r.get(timeout=30) for r in results] == ["finished"] * 3
    assert time.monotonic() - began >= 1.4  # one at a time again
    assert worker.terminate() == 0


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_autoscale_grows_under_a_backlog_and_shrinks_when_quiet(
    poolsapp: Any, start: Callable[..., WorkerProcess], pool: str
) -> None:
    worker = start("-P", pool, "--autoscale", "4,1")
    node = worker.node  # type: ignore[attr-defined]
    inspect = listening(poolsapp.app, node)
    stats = inspect.stats()[node]
    assert stats["autoscaler"] == {"max": 4, "min": 1, "current": 1, "qty": 0}
    assert stats["pool"]["max-concurrency"] == 1
    results = [poolsapp.spin.delay(3) for _ in range(4)]
    assert wait_until(lambda: inspect.stats()[node]["autoscaler"]["current"] == 4, 10), log_of(worker)
    assert wait_until(lambda: len(inspect.active()[node]) == 4, 10)  # four run at once
    assert inspect.stats()[node]["pool"]["max-concurrency"] == 4
    assert [r.get(timeout=30) for r in results] == ["finished"] * 4
    quiet = time.monotonic()
    assert wait_until(lambda: inspect.stats()[node]["pool"]["max-concurrency"] == 1, 15), log_of(worker)
    print(f"{pool}: back to 1 slot {time.monotonic() - quiet:.1f}s after the last task ended (keepalive 2s)")
    assert one(poolsapp.app, node, "autoscale", max=2, min=2) == {"ok": "autoscale now max=2 min=2"}
    assert inspect.stats()[node]["autoscaler"]["current"] == 2
    assert worker.terminate() == 0


@pytest.mark.parametrize("pool", ["processes", "threads"])
def test_the_new_signals_fire_in_the_process_that_does_the_work(
    poolsapp: Any, start: Callable[..., WorkerProcess], worker_env: dict[str, str], pool: str
) -> None:
    worker = start("-P", pool, "-c", "1", env={**worker_env, "POOLSAPP_BREAK": "1"})
    assert worker.proc is not None
    parent = worker.proc.pid
    broken = poolsapp.broken_inside.delay(7)
    with pytest.raises(RuntimeError, match="a bug in celeriac's tracer"):
        broken.get(timeout=30)
    failed = poolsapp.boom.delay()
    with pytest.raises(ValueError):
        failed.get(timeout=30)
    assert poolsapp.add.delay(1, 1).get(timeout=30) == 2  # the worker serves on
    assert worker.terminate() == 0
    runner = {noted(worker_env, "worker_process_init")[0]["pid"]} if pool == "processes" else {parent}
    [internal] = noted(worker_env, "task_internal_error")
    assert internal["pid"] in runner
    assert (internal["sender"], internal["task_id"], internal["request_id"]) == (
        poolsapp.broken_inside.name,
        broken.id,
        broken.id,
    )
    assert internal["args"] == [7] and "RuntimeError" in internal["exception"]
    assert (internal["einfo"], internal["internal"], internal["text"]) == ("ExceptionInfo", True, True)
    [failure] = noted(worker_env, "task_failure")  # the broken one was no failure of the task
    assert failure["pid"] in runner and failure["task_id"] == failed.id
    assert (failure["einfo"], failure["text"]) == ("ExceptionInfo", True)
    assert "ValueError('boom')" in failure["exception"]
    assert [(e["pid"], e["sender"]) for e in noted(worker_env, "import_modules")] == [(parent, "poolsapp")]
    loggers = noted(worker_env, "after_setup_task_logger")
    assert parent in {e["pid"] for e in loggers} and all(e["logger"] == "root" for e in loggers)
    assert all("%(task_name)s" in e["format"] for e in loggers)
    if pool == "processes":  # each child sets its logging up too
        assert runner <= {e["pid"] for e in loggers}
    shutting = noted(worker_env, "worker_shutting_down")
    assert [(e["pid"], e["sig"], e["how"], e["exitcode"]) for e in shutting] == [
        (parent, "SIGTERM", "Warm", 0)
    ]
    assert shutting[0]["sender"] == worker.node  # type: ignore[attr-defined]
