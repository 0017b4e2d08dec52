"""A real ``celeriac worker`` process on the shared RabbitMQ: results, countdowns kept by the broker,
poison tasks dead-lettered, kill -9 and a connection closed by the server survived; and on a node of
the test's own, a worker started before its broker.

Each test works on a queue, a dead-letter queue and a delay scheme of its own (deleted afterwards), so
the shared server's ``celery`` queue is never touched. Results go to a SQLite file.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celeriac
from celeriac.amqp.testkit import delete_amqp
from celeriac.config import Settings
from celeriac.exceptions import TaskRevokedError
from celeriac.worker import Worker
from tests.contract.conftest import SERVERS, _require, close_amqp_connections
from tests.integration import appmod
from tests.integration.conftest import WorkerProcess, ledger, log_of, wait_until
from tests.servers import RabbitServer, free_port, require_rabbit_server

pytestmark = pytest.mark.slow

URL = SERVERS["rabbitmq"][3]


@pytest.fixture
def names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:10]
    return {
        "queue": f"itest-{tag}",
        "other": f"itest-other-{tag}",
        "dead": f"itest-dead-{tag}",
        "connection": f"itest-{tag}",
    }


@pytest.fixture
def queue_type() -> str:
    return "classic"


@pytest.fixture
def worker_env(
    names: dict[str, str], queue_type: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    _require("rabbitmq")
    options = {
        "dead_letter_queue": names["dead"],
        "delayed_prefix": f"celeriac-itest-{queue_type}",
        "connection_name": names["connection"],
    }
    values = {
        "CELERIAC_BROKER_URL": URL,
        "CELERIAC_RESULT_BACKEND": f"db+sqlite:///{tmp_path}/results.sqlite3",
        "CELERIAC_TASK_DEFAULT_QUEUE": names["queue"],
        "CELERIAC_BROKER_TRANSPORT_OPTIONS": json.dumps(options),
        "CELERIAC_BROKER_MAX_DELIVERIES": "2",
        "CELERIAC_TASK_DEFAULT_QUEUE_TYPE": queue_type,
        "LEDGER_PATH": str(tmp_path / "ledger.txt"),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    yield {**os.environ, **values, "PYTHONUNBUFFERED": "1"}
    asyncio.run(delete_amqp(URL, [names["queue"], names["other"], names["dead"]], set()))


def test_results_and_a_countdown_kept_by_rabbitmq(app: Any, start_worker: Any, names: dict[str, str]) -> None:
    start_worker("-c", "2", "-P", "threads")
    assert appmod.add.delay(2, 3).get(timeout=20) == 5
    sent = time.monotonic()
    later = appmod.add.apply_async((1, 1), countdown=2)

    async def waiting() -> int:
        return await app.broker().size(names["queue"])

    assert app.run(waiting()) == 1  # in the delay scheme, not held by the worker
    assert later.get(timeout=20) == 2
    assert 1.9 <= time.monotonic() - sent < 10


def test_a_task_retried_through_the_delay_scheme_twice_comes_back_each_time(
    app: Any, start_worker: Any
) -> None:
    start_worker("-c", "2", "-P", "threads")
    # 2.1 s rounds up to 3 s: two delay queues a trip, so the second trip passes queues the first left.
    # RabbitMQ dropped it as a dead-letter cycle while the retry carried the first trip's x-death.
    assert appmod.retried.delay(2, 2.1).get(timeout=30) == 2


def test_a_task_that_expires_in_the_prefetch_is_reported_revoked(app: Any, start_worker: Any) -> None:
    start_worker("-c", "1", "-P", "threads")
    busy = [appmod.work.delay(0, 1.0) for _ in range(2)]  # RabbitMQ pushes the next messages meanwhile
    late = appmod.add.apply_async((1, 1), expires=1)
    with pytest.raises(TaskRevokedError):
        late.get(timeout=20)
    assert late.state == "REVOKED" and [r.get(timeout=20) for r in busy] == [0, 0]


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_a_poison_task_is_dead_lettered_after_max_deliveries(
    app: Any, start_worker: Any, names: dict[str, str]
) -> None:
    worker = start_worker("-c", "1", "-P", "processes")
    poison = appmod.die.delay()
    assert appmod.add.delay(1, 2).get(timeout=30) == 3  # the worker keeps serving

    async def dead() -> list[Any]:
        return await app.broker().dead_letters(names["queue"])

    assert wait_until(lambda: len(app.run(dead())) == 1, 30), log_of(worker)[-3000:]
    [letter] = app.run(dead())
    assert letter.message is not None and letter.message.task_id == poison.id
    assert "delivered 3 times" in letter.reason and "broker_max_deliveries=2" in letter.reason
    assert worker.proc is not None and worker.proc.poll() is None


def test_kill_9_mid_task_runs_it_again_on_restart(
    app: Any, start_worker: Any, worker_env: dict[str, str]
) -> None:
    results = [appmod.work.delay(i, 0.05) for i in range(60)]
    worker = start_worker("-c", "2", "-P", "processes")
    assert wait_until(lambda: len(ledger(worker_env)) >= 10, 30), log_of(worker)
    worker.kill()
    assert len(ledger(worker_env)) < 60, "the kill must land while tasks are queued and running"
    start_worker("-c", "2", "-P", "processes", name="w2")
    assert [r.get(timeout=60) for r in results] == list(range(60))
    ran = ledger(worker_env)
    assert set(ran) == {r.id for r in results}
    assert sum(ran.values()) - 60 <= 2  # only what ran at the kill runs twice


def test_a_connection_closed_by_the_server_is_reopened(
    app: Any, start_worker: Any, names: dict[str, str]
) -> None:
    worker = start_worker("-c", "2", "-P", "threads")
    assert appmod.add.delay(1, 1).get(timeout=20) == 2
    assert close_amqp_connections(names["connection"]) >= 1  # the worker's (and this client's)
    assert appmod.add.delay(2, 2).get(timeout=30) == 4
    results = [appmod.work.delay(i) for i in range(20)]
    assert [r.get(timeout=30) for r in results] == list(range(20))
    assert worker.proc is not None and worker.proc.poll() is None


@pytest.mark.parametrize(("queues", "held"), [(1, 8), (2, 4)])
def test_a_busy_worker_holds_its_prefetch_split_among_its_queues(
    app: Any, start_worker: Any, names: dict[str, str], queues: int, held: int
) -> None:
    # -c 2 --prefetch-multiplier 4: a prefetch of 8, split between two queues (4 each, at least 2).
    served = [names["queue"], names["other"]][:queues]
    start_worker("-c", "2", "-P", "threads", "--prefetch-multiplier", "4", "-Q", ",".join(served))
    for queue in served:
        for i in range(20):
            appmod.work.apply_async((i, 3.0), queue=queue)

    async def ready(queue: str) -> int:
        return await app.broker()._ready(queue)

    time.sleep(1.5)  # the first two tasks run for 3 s: nothing is acked meanwhile
    assert [20 - app.run(ready(queue)) for queue in served] == [held] * queues


# -- a worker started before its broker ----------------------------------------------------------------


def test_a_worker_started_before_its_broker_waits_for_it(
    worker_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_rabbit_server()
    server = RabbitServer(tmp_path / "rabbit")  # its port is chosen; nothing listens there yet
    env = {**worker_env, "CELERIAC_BROKER_URL": server.url()}
    monkeypatch.setenv("CELERIAC_BROKER_URL", server.url())
    worker = WorkerProcess(env, ["-n", "early@test", "-c", "2", "-P", "threads"], tmp_path / "early.log")
    try:
        worker.start(wait_for="cannot reach the broker")
        server.start()
        worker.wait_for("ready", timeout=60)
        appmod.app.conf = Settings()  # this test's broker
        appmod.app._brokers.clear()
        appmod.app._backends.clear()
        assert appmod.add.delay(2, 3).get(timeout=30) == 5
        assert worker.terminate() == 0
    finally:
        appmod.app.close()
        worker.stop()
        server.close()
    log = worker.log.read_text()
    assert f"cannot reach the broker amqp://guest:***@127.0.0.1:{server.port}// to start" in log
    assert "trying again in" in log and "(retry 1 of 100)" in log


def _unreachable(**settings: Any) -> Celeriac:
    app = Celeriac("early")
    app.conf.update(broker_url=f"amqp://guest:guest@127.0.0.1:{free_port()}//", result_backend="disabled://")
    app.conf.update(**settings)
    return app


def test_a_worker_told_not_to_wait_for_its_broker_fails_at_once() -> None:
    worker = Worker(_unreachable(broker_connection_retry_on_startup=False), pool="threads", concurrency=1)
    started = time.monotonic()
    with pytest.raises(OSError, match=r"cannot connect to 127\.0\.0\.1"):
        asyncio.run(worker.arun(install_signals=False))
    assert time.monotonic() - started < 5


def test_a_starting_worker_gives_up_after_max_retries(caplog: pytest.LogCaptureFixture) -> None:
    worker = Worker(_unreachable(broker_connection_max_retries=2), pool="threads", concurrency=1)
    with pytest.raises(OSError, match=r"cannot connect to 127\.0\.0\.1"):
        asyncio.run(worker.arun(install_signals=False))
    retries = [r.getMessage() for r in caplog.records if "cannot reach the broker" in r.getMessage()]
    assert [m[m.index("(retry") :] for m in retries] == ["(retry 1 of 2)", "(retry 2 of 2)"]


def test_a_stop_while_waiting_for_the_broker_ends_the_worker_cleanly() -> None:
    worker = Worker(_unreachable(broker_connection_max_retries=0), pool="threads", concurrency=1)

    async def scenario() -> int:
        running = asyncio.ensure_future(worker.arun(install_signals=False))
        await asyncio.sleep(1.0)  # several retries: each backs off at most 0.1 * 2**n s
        assert not running.done()
        worker.request_stop()
        async with asyncio.timeout(3):
            return await running

    assert asyncio.run(scenario()) == 0
