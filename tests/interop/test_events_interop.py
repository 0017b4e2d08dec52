"""Events between celeriac and the real Celery and Flower, on one Redis.

* Celery's own ``EventReceiver`` and ``events.State`` (what Flower and ``celery events`` run) read a
  ``celeriac worker -E``: the worker is online while it beats, its tasks have Celery's states, results
  and runtimes, and it is offline once it stops.
* ``celeriac events --dump`` prints the events of a real ``celery worker -E``.
* The real Flower lists our worker and our tasks through its HTTP API.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery  # type: ignore[import-untyped]

from celeriac import Celeriac
from tests.interop import celeriac_redis_app, celery_redis_app
from tests.interop import redis_fleet_tasks as tasks
from tests.interop.conftest import close_celery, require_redis
from tests.interop.redis_fleet import ROOT, FleetProcess, Space

#: db 11 is this module's: events are pub/sub on it, seen by whoever listens there.
REDIS = "redis://127.0.0.1:6379/11"
ENV = {**os.environ, "INTEROP_REDIS_URL": REDIS, "PYTHONUNBUFFERED": "1"}


def eventually(check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def space() -> Iterator[Space]:
    require_redis()
    space = Space(REDIS)
    yield space
    space.clean()
    space.client.close()


@pytest.fixture(scope="module")
def ours(space: Space) -> Iterator[Celeriac]:
    app = celeriac_redis_app.build(REDIS, result_expires=600)
    yield app
    app.close()


def celeriac_worker(queue: str, node: str, log: Path, *extra: str) -> FleetProcess:
    args = [
        sys.executable, "-m", "celeriac", "-A", "tests.interop.celeriac_redis_app", "worker",
        "-P", "threads", "-c", "2", "-Q", queue, "-n", node, "-l", "info", *extra,
    ]  # fmt: skip
    return FleetProcess("celeriac", args, log, ENV)


class CeleryListener:
    """Celery's ``EventReceiver`` on a thread, feeding Celery's ``events.State`` (Flower's model)."""

    def __init__(self) -> None:
        self.app = Celery("events_interop", broker=REDIS, set_as_current=False)
        self.state = self.app.events.State()
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._capture, daemon=True)
        self._ready = threading.Event()

    def _on_event(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(event)
            self.state.event(event)

    def _capture(self) -> None:
        with self.app.connection_for_read() as connection:
            self._receiver = self.app.events.Receiver(connection, handlers={"*": self._on_event})
            self._ready.set()
            with contextlib.suppress(socket.timeout, TimeoutError):
                self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def __enter__(self) -> CeleryListener:
        self._thread.start()
        assert self._ready.wait(10)
        time.sleep(0.5)  # the PSUBSCRIBE is sent once capture() runs
        return self

    def __exit__(self, *exc: object) -> None:
        self._receiver.should_stop = True
        self._thread.join(10)
        close_celery(self.app)

    def of(self, event_type: str, **match: Any) -> list[dict[str, Any]]:
        with self._lock:
            return [
                e
                for e in self.events
                if e["type"] == event_type and all(e.get(k) == v for k, v in match.items())
            ]


def test_celerys_receiver_and_state_follow_a_celeriac_worker(
    space: Space, ours: Celeriac, tmp_path: Path
) -> None:
    queue, node = space.name("events"), f"ev-{uuid.uuid4().hex[:6]}@interop"
    worker = celeriac_worker(queue, node, tmp_path / "worker.log", "-E", "--heartbeat-interval", "0.5")
    with CeleryListener() as celery:
        try:
            worker.start()
            ledger = space.name("ledger")
            done = ours.send_task(tasks.WORK, [ledger, 7], queue=queue)
            failed = ours.send_task(tasks.FAIL, ["ValueError", "no good"], queue=queue)
            assert done.get(timeout=20) == 7
            with pytest.raises(ValueError):
                failed.get(timeout=20)
            space.track(done.id), space.track(failed.id)
            eventually(lambda: celery.of("task-failed", uuid=failed.id), what="task-failed")
            eventually(lambda: celery.of("worker-heartbeat", hostname=node), what="a heartbeat")
            with celery._lock:
                state = celery.state
                assert state.workers[node].alive
                assert state.workers[node].sw_ident == "py-celeriac"
                task = state.tasks[done.id]
                assert (task.state, task.name, task.result) == ("SUCCESS", tasks.WORK, "7")
                assert task.runtime is not None and task.runtime >= 0
                assert task.worker.hostname == node
                assert task.received and task.started and task.succeeded
                bad = state.tasks[failed.id]
                assert bad.state == "FAILURE" and bad.exception == "ValueError('no good')"
                assert "no good" in bad.traceback
            batches = [e for e in celery.of("task-received") if e["uuid"] in (done.id, failed.id)]
            assert len(batches) == 2 and all(e["hostname"] == node for e in batches)
        finally:
            worker.stop()
        eventually(lambda: celery.of("worker-offline", hostname=node), what="worker-offline")
        with celery._lock:
            assert not celery.state.workers[node].alive


def test_celeriac_events_dump_prints_a_celery_workers_events(space: Space, tmp_path: Path) -> None:
    queue, node = space.name("events"), f"cy-{uuid.uuid4().hex[:6]}@interop"
    dump_log = tmp_path / "dump.log"
    with dump_log.open("wb") as out:
        dump = subprocess.Popen(
            [sys.executable, "-m", "celeriac", "-b", REDIS, "events", "--dump"],
            cwd=ROOT,
            env=ENV,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    args = [
        sys.executable, "-m", "celery", "-A", "tests.interop.celery_redis_app", "worker",
        "-P", "threads", "-c", "2", "-Q", queue, "-n", node, "-E",
        "--without-gossip", "--without-mingle", "-l", "info",
    ]  # fmt: skip
    celery_worker = FleetProcess("celery", args, tmp_path / "celery.log", ENV)
    client = celery_redis_app.build(REDIS)
    try:
        eventually(lambda: "listening" in dump_log.read_text(), what="the dump to listen")
        celery_worker.start()
        result = client.send_task(tasks.WORK, [space.name("ledger"), 3], queue=queue)
        assert result.get(timeout=20) == 3
        space.track(result.id)

        def lines() -> list[dict[str, Any]]:
            return [json.loads(line) for line in dump_log.read_text().splitlines() if line.startswith("{")]

        eventually(
            lambda: [e for e in lines() if e["type"] == "task-succeeded" and e["uuid"] == result.id],
            what="task-succeeded in the dump",
        )
        seen = {e["type"] for e in lines() if e["hostname"] == node}
        assert {"worker-online", "task-received", "task-started", "task-succeeded"} <= seen
        [succeeded] = [e for e in lines() if e["type"] == "task-succeeded" and e["uuid"] == result.id]
        assert succeeded["result"] == "3" and succeeded["runtime"] >= 0
    finally:
        celery_worker.stop()
        dump.terminate()
        dump.wait(10)
        close_celery(client)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_flower_lists_a_celeriac_worker_and_its_tasks(space: Space, ours: Celeriac, tmp_path: Path) -> None:
    queue, node = space.name("events"), f"fl-{uuid.uuid4().hex[:6]}@interop"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    flower_log = tmp_path / "flower.log"
    with flower_log.open("wb") as out:
        flower = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                f"--broker={REDIS}",
                "flower",
                f"--port={port}",
                "--address=127.0.0.1",
            ],
            cwd=ROOT,
            env={**ENV, "FLOWER_UNAUTHENTICATED_API": "true"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = celeriac_worker(queue, node, tmp_path / "worker.log", "-E")

    def answering() -> bool:
        with contextlib.suppress(OSError, urllib.error.URLError):
            urllib.request.urlopen(f"{base}/healthcheck", timeout=2).close()
            return True
        assert flower.poll() is None, flower_log.read_text()
        return False

    try:
        eventually(answering, 30, "Flower to answer")
        time.sleep(1.0)  # its event receiver subscribes beside the web server
        worker.start()
        ledger = space.name("ledger")
        results = [ours.send_task(tasks.WORK, [ledger, n], queue=queue) for n in range(5)]
        failed = ours.send_task(tasks.FAIL, ["ValueError", "flower sees this"], queue=queue)
        assert [r.get(timeout=20) for r in results] == list(range(5))
        with pytest.raises(ValueError):
            failed.get(timeout=20)
        for r in [*results, failed]:
            space.track(r.id)

        def listed() -> dict[str, Any]:
            found: dict[str, Any] = _get(f"{base}/api/tasks?workername={node}")
            return found if len(found) == 6 and found[failed.id]["state"] == "FAILURE" else {}

        found = eventually(listed, 30, "Flower to list our six tasks")
        for n, r in enumerate(results):
            task = found[r.id]
            assert (task["state"], task["name"], task["worker"]) == ("SUCCESS", tasks.WORK, node)
            assert task["result"] == str(n) and task["runtime"] >= 0
            assert task["received"] and task["started"] and task["succeeded"]
        assert found[failed.id]["exception"] == "ValueError('flower sees this')"
        info = _get(f"{base}/api/task/info/{results[0].id}")
        assert info["state"] == "SUCCESS" and info["worker"] == node
        assert _get(f"{base}/api/workers?status=1").get(node) is True
        workers = {w["hostname"]: w for w in _get(f"{base}/workers?json=1")["data"]}
        ours_there = workers[node]
        assert ours_there["status"] is True and ours_there["sw_ident"] == "py-celeriac"
        assert ours_there["task-succeeded"] == 5 and ours_there["task-failed"] == 1
        assert ours_there["task-received"] == 6
    finally:
        worker.stop()
        flower.terminate()
        try:
            flower.wait(10)
        except subprocess.TimeoutExpired:
            flower.kill()
            flower.wait(10)
