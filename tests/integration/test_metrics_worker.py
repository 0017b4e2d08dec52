"""A real ``celeriac worker --metrics-port`` process, on SQLite and on a private Redis: it runs tasks, and
its ``/metrics``, read with prometheus_client's parser, counts them right."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration import appmod
from tests.integration.conftest import log_of, wait_until
from tests.scrape import Samples, value
from tests.scrape import scrape as scrape_url
from tests.servers import free_port


@pytest.fixture(params=["sqlite_env", "redis_env"])
def worker_env(request: pytest.FixtureRequest) -> dict[str, str]:
    env: dict[str, str] = request.getfixturevalue(request.param)
    return env


def scrape(port: int) -> Samples:
    return scrape_url(f"http://127.0.0.1:{port}/metrics")


def test_a_worker_counts_its_tasks_and_times_them(
    app: Any, start_worker: Callable[..., Any], worker_env: dict[str, str]
) -> None:
    port = free_port()
    worker = start_worker("-c", "2", "-P", "threads", "--metrics-port", str(port))
    assert f"metrics at http://127.0.0.1:{port}/metrics" in log_of(worker)
    results = [appmod.add.delay(i, i) for i in range(5)]
    results += [appmod.boom.delay() for _ in range(2)]
    results += [appmod.work.delay(i, 0.2) for i in range(2)]
    results.append(appmod.retried.delay(1, 0))
    for result in results:
        result.get(timeout=30, propagate=False)
    app.send_task("tests.integration.appmod.not_there", [])  # no such task: dead-lettered
    add, boom = appmod.add.name, appmod.boom.name
    work, retried = appmod.work.name, appmod.retried.name

    def counted() -> bool:
        samples = scrape(port)
        return (
            value(samples, "celeriac_tasks_total", name="(unregistered)", state="failed") == 1
            and value(samples, "celeriac_tasks_total", name=retried, state="succeeded") == 1
            and value(samples, "celeriac_tasks_total", name=work, state="succeeded") == 2
        )

    assert wait_until(counted, 20), scrape(port)
    samples = scrape(port)
    for state, count in (("received", 5), ("started", 5), ("succeeded", 5)):
        assert value(samples, "celeriac_tasks_total", name=add, state=state) == count, state
    assert value(samples, "celeriac_tasks_total", name=boom, state="failed") == 2
    # A retry is received and started again under the same name.
    assert value(samples, "celeriac_tasks_total", name=retried, state="retried") == 1
    assert value(samples, "celeriac_tasks_total", name=retried, state="received") == 2
    assert value(samples, "celeriac_dead_lettered_total", reason="unregistered") == 1
    # The runtime histogram: both 0.2 s tasks above the 0.1 s bucket, their sum at least 0.4 s.
    assert value(samples, "celeriac_task_runtime_seconds_count", name=work) == 2
    assert value(samples, "celeriac_task_runtime_seconds_bucket", name=work, le="0.1") == 0
    assert value(samples, "celeriac_task_runtime_seconds_bucket", name=work, le="+Inf") == 2
    assert value(samples, "celeriac_task_runtime_seconds_sum", name=work) >= 0.4
    assert value(samples, "celeriac_task_runtime_seconds_bucket", name=add, le="0.1") == 5
    # One wait per start.
    assert value(samples, "celeriac_task_queue_wait_seconds_count", name=add) == 5
    assert value(samples, "celeriac_task_queue_wait_seconds_count", name=retried) == 2
    assert value(samples, "celeriac_pool_capacity") == 2
    assert value(samples, "celeriac_pool_busy") == 0
    info = value(samples, "celeriac_worker_info", hostname="w1@test", pool="threads", version="0.1.0")
    assert info == 1
    assert value(samples, "celeriac_worker_up", hostname="w1@test") == 1
    assert value(samples, "celeriac_broker_outages_total") == 0
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/nothing", timeout=5)
    missing.value.close()
    assert missing.value.code == 404
    assert worker.terminate() == 0
