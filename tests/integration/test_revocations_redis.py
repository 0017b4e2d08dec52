"""Revocations reach a real worker on Redis: revoked before it started (the index), while it runs (the
pushed feed, with no lookup per fetched batch), and while the feed is broken (a lookup per batch)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from celeriac import states
from tests.integration import appmod
from tests.integration.conftest import ledger, log_of, wait_until
from tests.servers import RedisServer

pytestmark = pytest.mark.slow


@pytest.fixture
def worker_env(redis_env: dict[str, str]) -> dict[str, str]:
    return redis_env


def _lookups(redis: RedisServer) -> int:
    """MGETs Redis has served since its stats were reset (the worker's per-batch revocation lookup)."""
    for line in redis.cli("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_mget:"):
            return int(line.split("calls=", 1)[1].split(",", 1)[0])
    return 0


def _revoke_then_send(app: Any) -> tuple[str, Any]:
    """Revoke a fresh id, then send a task under it (so the worker learns of it before it arrives)."""
    doomed = str(uuid.uuid4())
    app.AsyncResult(doomed).revoke()
    appmod.work.apply_async((0,), task_id=doomed)
    return doomed, appmod.work.delay(1)


def test_revoked_before_the_worker_started_is_not_run(
    app: Any, start_worker: Any, worker_env: dict[str, str]
) -> None:
    first = appmod.work.delay(1)
    second = appmod.work.delay(2)
    first.revoke()
    worker = start_worker("-c", "2", "-P", "threads")
    assert second.get(timeout=20) == 2, log_of(worker)
    assert first.state == states.REVOKED
    assert first.id not in ledger(worker_env)


def test_revocations_are_pushed_to_a_running_worker_without_lookups(
    app: Any, start_worker: Any, worker_env: dict[str, str], redis: RedisServer
) -> None:
    worker = start_worker("-c", "2", "-P", "threads")
    assert appmod.add.delay(1, 1).get(timeout=20) == 2, log_of(worker)
    redis.cli("CONFIG", "RESETSTAT")
    runs = [_revoke_then_send(app) for _ in range(5)]
    # Waited for on the ledger, not on results: MGETs now are the revokes' own reads and the worker's.
    assert wait_until(lambda: all(after.id in ledger(worker_env) for _, after in runs), 20), log_of(worker)
    assert _lookups(redis) == len(runs), "the worker looked revocations up although the feed was live"
    ran = ledger(worker_env)
    for doomed, after in runs:
        assert after.get(timeout=20) == 1
        assert doomed not in ran
        assert app.AsyncResult(doomed).state == states.REVOKED


def test_a_broken_feed_falls_back_to_lookups_and_comes_back(
    app: Any, start_worker: Any, worker_env: dict[str, str], redis: RedisServer
) -> None:
    worker = start_worker("-c", "2", "-P", "threads")
    assert appmod.add.delay(1, 1).get(timeout=20) == 2, log_of(worker)
    redis.cli("CLIENT", "KILL", "TYPE", "pubsub")  # the feed's connection (and any result waits')
    assert wait_until(lambda: "revocations feed from the result backend broke" in log_of(worker), 20)
    doomed, after = _revoke_then_send(app)
    assert after.get(timeout=20) == 1
    assert doomed not in ledger(worker_env)
    assert app.AsyncResult(doomed).state == states.REVOKED
    # The feed comes back (its backoff starts at 0.5 s): then no lookups again.
    deadline = time.monotonic() + 40
    while True:
        redis.cli("CONFIG", "RESETSTAT")
        doomed, after = _revoke_then_send(app)
        assert wait_until(lambda ran=after.id: ran in ledger(worker_env), 20), log_of(worker)
        lookups = _lookups(redis)
        assert after.get(timeout=20) == 1
        assert doomed not in ledger(worker_env)
        if lookups == 1:  # the revoke's own read only
            break
        assert time.monotonic() < deadline, "the revocations feed did not come back"
        time.sleep(0.5)
