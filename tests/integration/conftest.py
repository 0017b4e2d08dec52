"""Real worker processes on a private SQLite file (or, where a test module overrides ``worker_env``, a
private Redis server), started and stopped by the tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.servers import RedisServer, redis_server

__all__ = ["redis_server"]  # a fixture: private redis-server processes for the tests that break them

ROOT = Path(__file__).resolve().parents[2]


def ledger(env: dict[str, str]) -> Counter[str]:
    """How often each ledger key was written: a task id per run of ``work``; ``body:<id>`` and
    ``errback:<id>`` per run of a chord body or errback (appmod's tasks write one line per run)."""
    file = Path(env["LEDGER_PATH"])
    return Counter(file.read_text().split()[0::2] if file.exists() else [])


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def log_of(worker: WorkerProcess) -> str:
    return worker.log.read_text(errors="replace")


class WorkerProcess:
    """``celeriac -A APP worker ARGS`` (or another ``command``: ``beat``) in a session of its own."""

    def __init__(
        self,
        env: dict[str, str],
        args: list[str],
        log: Path,
        app: str = "tests.integration.appmod",
        command: str = "worker",
    ) -> None:
        self.env, self.args, self.log, self.app, self.command = env, args, log, app, command
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_for: str = "ready") -> WorkerProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celeriac", "-A", self.app, self.command, *self.args],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_for(wait_for, timeout=30)
        return self

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log.read_text(errors="replace"):
                return
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"worker never logged {text!r}; log:\n{self.log.read_text(errors='replace')}")

    def kill(self) -> None:
        """SIGKILL the worker and its pool children, as an OOM killer or a lost machine would."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def sqlite_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    db = tmp_path / "broker.sqlite3"
    values = {
        "CELERIAC_BROKER_URL": f"sqlite:///{db}",
        "CELERIAC_RESULT_BACKEND": f"db+sqlite:///{db}",
        "CELERIAC_BROKER_LEASE_SECONDS": "2",
        "CELERIAC_TASK_MESSAGE_MAX_BYTES": "1000000",
        "LEDGER_PATH": str(tmp_path / "ledger.txt"),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **values, "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def redis(redis_server: Callable[..., RedisServer]) -> RedisServer:
    """A private redis-server of the test's own (a module overrides it for other settings)."""
    return redis_server()


@pytest.fixture
def redis_env(redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of an app and its workers on the test's private ``redis``."""
    values = {
        "CELERIAC_BROKER_URL": redis.url(),
        "CELERIAC_RESULT_BACKEND": redis.url(),
        "LEDGER_PATH": str(tmp_path / "ledger.txt"),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **values, "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def worker_env(sqlite_env: dict[str, str]) -> dict[str, str]:
    """The environment of the app and its workers; a test module overrides it for another broker."""
    return sqlite_env


@pytest.fixture
def app(worker_env: dict[str, str]) -> Iterator[object]:
    from celeriac.config import Settings
    from tests.integration import appmod

    appmod.app.conf = Settings()  # read the test's CELERIAC_* variables
    appmod.app._router = None
    appmod.app._brokers.clear()
    appmod.app._backends.clear()
    yield appmod.app
    appmod.app.close()


@pytest.fixture
def start_worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[object]:
    started: list[WorkerProcess] = []

    def start(*args: str, name: str = "w1") -> WorkerProcess:
        worker = WorkerProcess(worker_env, ["-n", f"{name}@test", *args], tmp_path / f"{name}.log")
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.stop()
