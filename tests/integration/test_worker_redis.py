"""A real ``celeriac worker`` process against a private redis-server that the tests crash, restart and
stall: the worker waits the outage out, says so in its log, and loses nothing."""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from celeriac.exceptions import OperationalError
from tests.integration import appmod
from tests.integration.conftest import ledger, log_of, wait_until
from tests.servers import RedisServer

pytestmark = pytest.mark.slow

LEASE_SECONDS = 2.0
WEDGE_SECONDS = 1.0


@pytest.fixture
def redis(redis_server: Callable[..., RedisServer]) -> RedisServer:
    # Every write on disk before Redis answers: a restart keeps whatever a client was told is stored.
    return redis_server(appendonly="yes", appendfsync="always")


@pytest.fixture
def worker_env(redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "CELERIAC_BROKER_URL": redis.url(),
        "CELERIAC_RESULT_BACKEND": redis.url(),
        "CELERIAC_BROKER_LEASE_SECONDS": str(LEASE_SECONDS),
        "CELERIAC_WORKER_WEDGE_TIMEOUT": str(WEDGE_SECONDS),
        "LEDGER_PATH": str(tmp_path / "ledger.txt"),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **values, "PYTHONUNBUFFERED": "1"}


def held(redis: RedisServer) -> int:
    """Messages leased to some consumer (in a ``celeriac.processing.*`` hash)."""
    keys = redis.cli("--scan", "--pattern", "celeriac.processing.*").split()
    return sum(int(redis.cli("HLEN", key)) for key in keys)


def test_redis_crash_and_restart_mid_run_loses_nothing(
    app: Any, start_worker: Any, worker_env: dict[str, str], redis: RedisServer
) -> None:
    worker = start_worker("-c", "2", "-P", "threads")
    results = [appmod.work.delay(i, 0.02) for i in range(100)]
    assert wait_until(lambda: len(ledger(worker_env)) >= 20, 20), log_of(worker)
    down = redis.restart(downtime=2.0, kill=True)  # SIGKILL: a crash, not a clean shutdown
    assert [r.get(timeout=30) for r in results] == list(range(100))
    ran = ledger(worker_env)
    assert set(ran) == {r.id for r in results}
    # Tasks running when Redis died may run again (their heartbeat ran out meanwhile); no others.
    assert sum(ran.values()) - 100 <= 2, ran.most_common(3)
    assert worker.proc is not None and worker.proc.poll() is None, "the worker exited"
    text = log_of(worker)
    # Whatever it was doing when Redis died (fetching, or storing results and acking with every slot
    # busy) the worker said so, and said when the broker answered again.
    assert re.search(
        rf"could not (fetch from|store \d+ result\(s\) on|ack \d+ message\(s\) on) {redis.url()}", text
    )
    if "could not fetch from" in text:
        assert f"broker {redis.url()} answers again" in text, text[-3000:]
    assert down >= 2.0


def test_results_and_acks_made_during_an_outage_are_written_once_it_heals(
    app: Any, start_worker: Any, worker_env: dict[str, str], redis: RedisServer
) -> None:
    worker = start_worker("-c", "2", "-P", "threads")
    slow = [appmod.work.delay(i, 1.0) for i in range(2)]
    worker.wait_for("received", timeout=20)
    time.sleep(0.2)
    redis.stop(kill=True)
    # The tasks end while Redis is down: their results (written first) and then their acks wait,
    # tried again with backoff.
    assert wait_until(lambda: len(ledger(worker_env)) == 2, 10), log_of(worker)
    assert wait_until(lambda: "could not store" in log_of(worker), 10), log_of(worker)
    time.sleep(1.0)
    redis.start()
    assert [r.get(timeout=20) for r in slow] == [0, 1]
    # acked once the server was back: nothing is left in a processing hash to run a second time
    assert wait_until(lambda: held(redis) == 0, 10), log_of(worker)[-3000:]
    assert re.search(r"store \d result\(s\) on \S+: done after \d+ failed attempt", log_of(worker))
    assert worker.terminate() == 0
    assert ledger(worker_env) == Counter({r.id: 1 for r in slow})


def test_sigterm_during_the_backoff_stops_the_worker_promptly(
    app: Any, start_worker: Any, redis: RedisServer
) -> None:
    worker = start_worker("-c", "1", "-P", "threads")
    redis.stop(kill=True)
    worker.wait_for("could not fetch from", timeout=20)
    time.sleep(1.0)  # let the backoff grow past its first steps
    began = time.monotonic()
    assert worker.terminate(timeout=15) == 0
    took = time.monotonic() - began
    assert took < 5, f"took {took:.1f}s to stop; log:\n{log_of(worker)[-3000:]}"


def test_a_wedged_consumer_is_detected_cancelled_and_restarted(
    app: Any, start_worker: Any, redis: RedisServer
) -> None:
    worker = start_worker("-c", "1", "-P", "threads")
    assert appmod.add.delay(1, 1).get(timeout=20) == 2
    time.sleep(0.3)  # its ack too: the worker is idle, fetching
    redis.pause()  # the socket stays open and nothing answers: a stalled connection
    try:
        worker.wait_for("consumer wedged", timeout=WEDGE_SECONDS + 10)
        time.sleep(1.0 + WEDGE_SECONDS + 1.0)  # wedged again on a new connection: reported again
    finally:
        redis.resume()
    text = log_of(worker)
    assert "ERROR" in text.split("consumer wedged")[0].splitlines()[-1]
    assert text.count("consumer wedged") >= 2, text[-3000:]
    # fetching restarted: the worker serves again once the server answers
    assert appmod.add.delay(2, 3).get(timeout=20) == 5
    assert worker.terminate() == 0


def test_delay_to_a_broker_that_never_answers_fails_soon_and_says_so(app: Any, redis: RedisServer) -> None:
    assert appmod.add.delay(1, 1).id  # connected: the client has a live connection to the server
    app.conf.update(broker_publish_timeout=1.0, task_publish_retry_policy={"max_retries": 1})
    redis.pause()  # connections stay open and nothing answers: a SIGSTOPped or wedged server
    try:
        began = time.monotonic()
        with pytest.raises(
            OperationalError, match=r"no answer within 1(\.0+1)?s.*broker_publish_timeout"
        ) as failed:
            appmod.add.delay(2, 2)
        took = time.monotonic() - began
    finally:
        redis.resume()
    assert took < 4.0, f"delay() held its caller {took:.1f}s"
    assert redis.url() in str(failed.value) and isinstance(failed.value, ConnectionError)
    assert appmod.add.delay(3, 3).id  # the client works again once the server answers
