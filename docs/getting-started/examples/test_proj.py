"""Testing the example project's tasks with celeriac.testing (run: pytest test_proj.py)."""

from collections.abc import Iterator
from typing import Any

import pytest
from proj.celery import app
from proj.retrying import refresh_feed
from proj.tasks import add, mul

from celeriac import Celery
from celeriac.testing import start_worker
from celeriac.worker import Worker


# Plain calls run the function here: no broker, no worker.
def test_add_runs_here() -> None:
    assert add(2, 2) == 4


# The project's own app on a private in-memory broker and backend, served by a worker thread.
@pytest.fixture(scope="module")
def proj_worker() -> Iterator[Worker]:
    app.conf.update(broker_url="memory://proj-tests", result_backend="memory://proj-tests")
    with start_worker(app, queues=["celery", "hipri"]) as worker:
        yield worker
    app.close()


def test_add_through_a_worker(proj_worker: Worker) -> None:
    assert add.delay(2, 3).get(timeout=10) == 5
    assert (add.s(2, 2) | mul.s(10)).delay().get(timeout=10) == 40


# apply() runs a task here as a worker would, retries included (at once, without the countdown).
def test_gives_up_after_max_retries() -> None:
    result = refresh_feed.apply(args=["https://unreachable.example/feed"])
    assert result.state == "FAILURE"
    with pytest.raises(ConnectionError):
        result.get()


# The fixtures of celeriac.testing give each test a fresh app of its own.
@pytest.fixture
def celeriac_config() -> dict[str, Any]:
    return {"task_track_started": True}


def test_fixture_app_and_worker(celeriac_app: Celery, celeriac_worker: Worker) -> None:
    @celeriac_app.task
    def double(x: int) -> int:
        return 2 * x

    assert celeriac_app.conf.task_track_started is True
    assert double.delay(21).get(timeout=10) == 42


def test_eager_app(celeriac_eager_app: Celery) -> None:
    @celeriac_eager_app.task
    def divide(x: float, y: float) -> float:
        return x / y

    assert divide.delay(6, 3).get() == 2
    with pytest.raises(ZeroDivisionError):
        divide.delay(1, 0)
