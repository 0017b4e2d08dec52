"""A real ``celeriac worker`` process on SQS (moto's server), results on Redis: tasks, a chain and a
countdown run; a task longer than the visibility timeout is not redelivered while it runs; a warm
shutdown gives unstarted messages back at once; a killed worker's messages come back (lost = 0)."""

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

from celeriac.sqs.testkit import SQSBrokerKit
from tests.contract.conftest import _require_redis_results, sqs_kit
from tests.integration import appmod
from tests.integration.conftest import ledger, log_of, wait_until

pytestmark = pytest.mark.slow

LEASE_SECONDS = 1.0


@pytest.fixture
def kit(sqs_endpoint: str) -> Iterator[SQSBrokerKit]:
    kit = sqs_kit(sqs_endpoint)
    yield kit
    kit.clean()


@pytest.fixture
def worker_env(
    kit: SQSBrokerKit, sqs_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    _require_redis_results()
    # kombu's URL form: the endpoint is the URL's host (http unless is_secure).
    host = sqs_endpoint.removeprefix("http://")
    options = {k: v for k, v in kit.defaults.items() if k != "endpoint_url"}
    options["broadcast_url"] = "redis://127.0.0.1:6379/15"  # remote control and events
    values = {
        "CELERIAC_BROKER_URL": f"sqs://test:test@{host}",
        "CELERIAC_BROKER_TRANSPORT_OPTIONS": json.dumps(options),
        "CELERIAC_BROKER_LEASE_SECONDS": str(LEASE_SECONDS),
        "CELERIAC_RESULT_BACKEND": "redis://127.0.0.1:6379/14",
        "CELERIAC_RESULT_BACKEND_TRANSPORT_OPTIONS": json.dumps(
            {"global_keyprefix": f"sqs-{uuid.uuid4().hex[:8]}:"}
        ),
        "LEDGER_PATH": str(tmp_path / "ledger.txt"),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **values, "PYTHONUNBUFFERED": "1"}


def _fetch_all(app: Any, queue: str = "celery") -> list[Any]:
    """What waits on ``queue`` now, taken by a fresh consumer (and given back on closing)."""

    async def take() -> list[Any]:
        from celeriac.brokers import create_broker

        broker = create_broker(app.broker_url, dict(app.conf.broker_transport_options))
        try:
            return await broker.fetch([queue], 10, 1.0)
        finally:
            await broker.close()

    return asyncio.run(take())


def test_a_worker_runs_tasks_a_chain_a_countdown_a_task_longer_than_its_lease_and_remote_control(
    app: Any, start_worker: Any, worker_env: dict[str, str]
) -> None:
    """The long task runs 3x the lease: the heartbeat extends its message's visibility meanwhile, or a
    free slot of the same worker would take it again the moment it showed. With ``broadcast_url``, the
    worker answers remote control (over Redis) and says nothing is missing."""
    worker = start_worker("-c", "3", "-P", "threads")
    long = appmod.work.delay(-1, 3 * LEASE_SECONDS)
    results = [appmod.work.delay(i) for i in range(20)]
    chained = (appmod.add.s(1, 2) | appmod.add.s(3)).apply_async()
    sent = time.time()
    later = appmod.add.apply_async((5, 5), countdown=2)
    assert [r.get(timeout=20) for r in results] == list(range(20))
    assert chained.get(timeout=20) == 6
    assert later.get(timeout=20) == 10 and time.time() - sent >= 2.0
    assert long.get(timeout=20) == -1
    # Remote control through the side channel, meanwhile (a redelivery after the ack would show now).
    assert app.control.inspect(timeout=LEASE_SECONDS + 0.5).ping() == {"w1@test": {"ok": "pong"}}
    assert ledger(worker_env)[long.id] == 1, log_of(worker)
    assert "lease" not in log_of(worker) and "WARNING" not in log_of(worker), log_of(worker)


@pytest.mark.chaos  # the contract suite's release and close tests cover the broker's side by default
def test_warm_shutdown_gives_unstarted_messages_back_at_once(
    app: Any, start_worker: Any, worker_env: dict[str, str]
) -> None:
    app.conf.broker_lease_seconds = 60  # a message not given back would stay hidden for a minute
    worker_env["CELERIAC_BROKER_LEASE_SECONDS"] = "60"
    worker = start_worker("-c", "1", "-P", "threads", "--prefetch-multiplier", "4")
    running = appmod.work.delay(0, 2.0)
    assert wait_until(lambda: "Task tests.integration.appmod.work" in log_of(worker), 10)
    waiting = [appmod.work.delay(n) for n in range(1, 4)]
    assert wait_until(lambda: log_of(worker).count("received") >= 4, 10), log_of(worker)
    assert worker.terminate() == 0
    assert running.get(timeout=5) == 0
    back = _fetch_all(app)
    assert sorted(d.message.task_id for d in back) == sorted(r.id for r in waiting)
    assert [d.deliveries for d in back] == [1, 1, 1]


@pytest.mark.chaos  # the contract suite's frozen-consumer test covers the lease in the default run
def test_a_killed_workers_messages_come_back(app: Any, start_worker: Any, worker_env: dict[str, str]) -> None:
    first = start_worker("-c", "2", "-P", "threads", name="w1")
    results = [appmod.work.delay(i, 0.2) for i in range(20)]
    assert wait_until(lambda: len(ledger(worker_env)) >= 4, 20), log_of(first)
    first.kill()
    start_worker("-c", "4", "-P", "threads", name="w2")
    assert [r.get(timeout=30) for r in results] == list(range(20))  # lost = 0
    ran = ledger(worker_env)
    assert set(ran) == {r.id for r in results}
    assert sum(ran.values()) - 20 <= 4, ran.most_common(4)  # at most what w1 held when killed
