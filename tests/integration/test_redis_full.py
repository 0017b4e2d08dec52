"""A Redis broker filled to ``maxmemory`` with ``noeviction`` (what docs/redis.md recommends): a worker
started on it drains it, with results kept elsewhere, and nothing is lost or run twice."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from celeriac.exceptions import OperationalError
from tests.integration import appmod
from tests.integration.conftest import ledger, wait_until
from tests.servers import RedisServer

pytestmark = pytest.mark.slow


@pytest.fixture
def redis(redis_server: Callable[..., RedisServer]) -> RedisServer:
    return redis_server(maxmemory="3mb", maxmemory_policy="noeviction")


@pytest.fixture
def worker_env(redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "CELERIAC_BROKER_URL": redis.url(),
        "CELERIAC_RESULT_BACKEND": f"db+sqlite:///{tmp_path}/results.sqlite3",
        "CELERIAC_BROKER_LEASE_SECONDS": "2",
        "CELERIAC_TASK_PUBLISH_RETRY": "false",
        "LEDGER_PATH": str(tmp_path / "ledger.txt"),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **values, "PYTHONUNBUFFERED": "1"}


def test_a_worker_drains_a_broker_at_maxmemory(
    app: Any, start_worker: Any, redis: RedisServer, worker_env: dict[str, str]
) -> None:
    padding = "x" * 20_000
    sent = []
    with pytest.raises(OperationalError, match="OutOfMemoryError"):
        for n in range(1_000):  # a countdown, so the first fetch must move them out of the delayed set
            sent.append(appmod.work.apply_async((n, 0.0, padding), countdown=1).id)
    assert len(sent) > 20, "the server filled up before a useful backlog"
    time.sleep(1.5)  # all due
    start_worker("-c", "4", "-P", "threads")
    assert wait_until(lambda: len(ledger(worker_env)) >= len(sent), timeout=60), "the backlog never drained"
    ran = ledger(worker_env)
    assert set(ran) == set(sent) and max(ran.values()) == 1
    assert appmod.add.delay(1, 2).get(timeout=20) == 3  # room again: new work goes through
