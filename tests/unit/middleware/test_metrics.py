"""The worker's Prometheus metrics on the memory broker: the exposition format as prometheus_client parses
it, what each kind of message counts as, and nothing at all while metrics are off."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from celeriac import Celeriac
from celeriac._prometheus import Counter, Histogram, render
from celeriac.exceptions import ConfigurationError, Reject
from celeriac.middleware.metrics import Metrics
from celeriac.testing import start_worker
from celeriac.worker import Worker
from tests.scrape import Samples, parse, scrape, value


@pytest.fixture
def app(request: pytest.FixtureRequest) -> Iterator[Celeriac]:
    url = f"memory://metrics-{request.node.name}"
    app = Celeriac("metrics", broker=url, backend=url)

    @app.task(name="add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="refuse")
    def refuse() -> None:
        raise Reject("no thanks", requeue=False)

    yield app
    app.close()


def test_label_values_are_escaped_and_histograms_are_cumulative() -> None:
    odd = 'a "quoted"\\ name\nwith a newline'
    counter = Counter("celeriac_things_total", "Things.", ("name",))
    counter.inc((odd,))
    counter.inc((odd,), 2)
    histogram = Histogram("celeriac_wait_seconds", "Waits.", ("name",), buckets=(0.1, 1.0))
    for seconds in (0.05, 0.1, 0.5, 3.0):
        histogram.observe(("x",), seconds)
    samples = parse(render([counter, histogram]))
    assert value(samples, "celeriac_things_total", name=odd) == 3
    # le is "less than or equal": 0.1 falls in the 0.1 bucket.
    assert value(samples, "celeriac_wait_seconds_bucket", name="x", le="0.1") == 2
    assert value(samples, "celeriac_wait_seconds_bucket", name="x", le="1.0") == 3
    assert value(samples, "celeriac_wait_seconds_bucket", name="x", le="+Inf") == 4
    assert value(samples, "celeriac_wait_seconds_count", name="x") == 4
    assert value(samples, "celeriac_wait_seconds_sum", name="x") == pytest.approx(3.65)


def test_off_by_default_no_hook_of_it_is_live(app: Celeriac) -> None:
    worker = Worker(app)
    assert worker.metrics_port is None
    assert any(isinstance(mw, Metrics) for mw in worker.middleware)
    for hook in ("after_fetch", "on_start", "after_outcome", "on_refused", "on_abandoned"):
        assert not any(isinstance(mw, Metrics) for mw in worker._hooked(hook)), hook


def test_a_port_that_is_no_tcp_port_is_refused(app: Celeriac) -> None:
    with pytest.raises(ConfigurationError, match="not a TCP port"):
        Worker(app, metrics_port=70000)


def test_expired_rejected_and_wrong_arguments_are_counted_by_what_became_of_them(app: Celeriac) -> None:
    add, refuse = app.tasks["add"], app.tasks["refuse"]
    with start_worker(app, metrics_port=0) as worker:
        metrics = next(mw for mw in worker.middleware if isinstance(mw, Metrics))
        assert metrics.port
        add.apply_async((1, 2), expires=datetime.now(UTC) - timedelta(seconds=1))
        refuse.delay().get(timeout=5, propagate=False)
        app.send_task("add", [1])  # one argument short: dead-lettered
        assert add.delay(2, 2).get(timeout=5) == 4

        url = f"http://127.0.0.1:{metrics.port}/metrics"
        deadline = time.monotonic() + 5
        while value(scrape(url), "celeriac_dead_lettered_total", reason="bad_arguments") < 1:
            assert time.monotonic() < deadline, scrape(url)
            time.sleep(0.02)
        samples: Samples = scrape(url)
    assert value(samples, "celeriac_tasks_total", name="add", state="revoked") == 1
    assert value(samples, "celeriac_tasks_total", name="add", state="succeeded") == 1
    assert value(samples, "celeriac_tasks_total", name="add", state="failed") == 1  # wrong arguments
    assert value(samples, "celeriac_tasks_total", name="refuse", state="rejected") == 1
    assert value(samples, "celeriac_dead_lettered_total", reason="rejected") == 1
    assert value(samples, "celeriac_dead_lettered_total", reason="bad_arguments") == 1
    # Only what started waited: the expired task never did.
    assert value(samples, "celeriac_task_queue_wait_seconds_count", name="add") == 1


def test_a_port_in_use_stops_the_worker_with_an_error_naming_the_setting(app: Celeriac) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with (
            pytest.raises(ConfigurationError, match=f"127.0.0.1:{port}.*worker_metrics_port"),
            start_worker(app, metrics_port=port),
        ):
            pass
