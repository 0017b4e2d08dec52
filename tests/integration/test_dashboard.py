"""``celeriac dashboard`` as a real process: its /metrics sums the events of two real workers on a private
Redis and reads queue lengths and dead letters from it; beyond loopback it needs a token."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration import appmod
from tests.integration.conftest import ROOT, wait_until
from tests.scrape import Samples, scrape, value
from tests.servers import free_port


class DashboardProcess:
    """``celeriac -A appmod dashboard ARGS``, stopped with SIGTERM at the end of the test."""

    def __init__(self, env: dict[str, str], args: list[str], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celeriac", "-A", "tests.integration.appmod", "dashboard", *args],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def start_dashboard(tmp_path: Path) -> Iterator[Callable[..., DashboardProcess]]:
    started: list[DashboardProcess] = []

    def start(env: dict[str, str], *args: str) -> DashboardProcess:
        dashboard = DashboardProcess(env, list(args), tmp_path / f"dashboard-{len(started)}.log")
        started.append(dashboard)
        return dashboard

    yield start
    for dashboard in started:
        dashboard.stop()


@pytest.fixture
def worker_env(redis_env: dict[str, str]) -> dict[str, str]:
    return redis_env


def health(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            found: dict[str, Any] = json.loads(response.read())
            return found
    except OSError:  # not listening yet
        return None


def test_the_dashboard_sums_two_workers_events_and_reads_the_broker(
    app: Any,
    worker_env: dict[str, str],
    start_worker: Callable[..., Any],
    start_dashboard: Callable[..., DashboardProcess],
) -> None:
    port = free_port()
    dashboard = start_dashboard(worker_env, "--port", str(port), "-Q", "celery,idle-q")
    assert wait_until(lambda: (health(port) or {}).get("events") is True, 20), dashboard.text()
    start_worker("-E", "-c", "2", "-P", "threads", name="w1")
    start_worker("-E", "-c", "2", "-P", "threads", name="w2")
    results = [appmod.add.delay(i, i) for i in range(6)]
    results += [appmod.boom.delay() for _ in range(2)]
    results += [appmod.work.delay(i, 0.2) for i in range(2)]
    for result in results:
        result.get(timeout=30, propagate=False)
    for i in range(3):
        appmod.add.apply_async((i, i), queue="idle-q")  # no worker consumes it
    app.send_task("tests.integration.appmod.not_there", [])  # dead-lettered by a worker
    url = f"http://127.0.0.1:{port}/metrics"
    add, boom, work = appmod.add.name, appmod.boom.name, appmod.work.name

    def seen() -> Samples:
        return scrape(url)

    def settled() -> bool:
        samples = seen()
        return (
            value(samples, "celeriac_tasks_total", name=add, state="succeeded") == 6
            and value(samples, "celeriac_tasks_total", name=work, state="succeeded") == 2
            and value(samples, "celeriac_tasks_total", name=boom, state="failed") == 2
            and value(samples, "celeriac_dead_letters", queue="celery") == 1
            and value(samples, "celeriac_workers_up") == 2
        )

    assert wait_until(settled, 30), seen()
    samples = seen()
    for state in ("received", "started"):
        assert value(samples, "celeriac_tasks_total", name=add, state=state) == 6
    assert value(samples, "celeriac_worker_up", hostname="w1@test") == 1
    assert value(samples, "celeriac_worker_up", hostname="w2@test") == 1
    # The refused message's task-failed names no task: counted under one label.
    assert value(samples, "celeriac_tasks_total", name="(unknown)", state="failed") == 1
    assert value(samples, "celeriac_task_runtime_seconds_count", name=work) == 2
    assert value(samples, "celeriac_task_runtime_seconds_bucket", name=work, le="0.1") == 0
    assert value(samples, "celeriac_task_runtime_seconds_sum", name=work) >= 0.4
    assert value(samples, "celeriac_queue_length", queue="idle-q") == 3
    assert value(samples, "celeriac_queue_length", queue="celery") == 0
    assert value(samples, "celeriac_dead_letters", queue="idle-q") == 0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        assert "not built yet" in response.read().decode()


def test_beyond_loopback_the_dashboard_needs_a_token(
    sqlite_env: dict[str, str], start_dashboard: Callable[..., DashboardProcess]
) -> None:
    port = free_port()
    refused = start_dashboard(sqlite_env, "--host", "0.0.0.0", "--port", str(port))
    assert refused.proc.wait(30) == 2
    assert "beyond loopback: give it a token" in refused.text()

    env = {**sqlite_env, "CELERIAC_DASHBOARD_AUTH_TOKEN": "s3cret"}
    dashboard = start_dashboard(env, "--host", "0.0.0.0", "--port", str(port))
    assert wait_until(lambda: health(port) is not None, 20), dashboard.text()  # /healthz is open
    url = f"http://127.0.0.1:{port}/metrics"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
        with pytest.raises(urllib.error.HTTPError) as denied:
            scrape(url, headers)
        denied.value.close()
        assert denied.value.code == 401, headers
    samples = scrape(url, {"Authorization": "Bearer s3cret"})
    assert value(samples, "celeriac_queue_length", queue="celery") == 0
