"""A message a broker cannot read is dead-lettered, and when its id can still be read from what is left
of it, its result fails with the reason: a caller waiting on it gets an error, not a wait forever. On
SQLite and on a private Redis, with envelopes put on the broker as raw bytes."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from celeriac.exceptions import DecodeError
from celeriac.redis.testkit import RedisBrokerKit
from celeriac.sql.testkit import SQLBrokerKit
from tests.servers import RedisServer


def envelope(body: Any, headers: Any, properties: Any) -> bytes:
    return json.dumps(
        {
            "body": body,
            "content-type": "application/json",
            "content-encoding": "utf-8",
            "headers": headers,
            "properties": properties,
        }
    ).encode()


RAW = {
    # body_encoding says base64, the body is not: the headers still name the task and its id
    "not-base64": envelope(
        "%%% not base64 %%%",
        {"lang": "py", "task": "tests.integration.appmod.add", "id": "raw-not-base64"},
        {"correlation_id": "raw-not-base64", "body_encoding": "base64", "delivery_tag": "t1"},
    ),
    # headers are not an object: the id is read from properties.correlation_id
    "bad-headers": envelope(
        "W1sxLCAyXSwge30sIHt9XQ==",
        ["not", "an", "object"],
        {"correlation_id": "raw-bad-headers", "body_encoding": "base64"},
    ),
    # no id anywhere: dead-lettered all the same, with nothing to fail
    "no-id": b"\xff not an envelope at all",
}


@pytest.fixture(params=["sqlite", "redis"])
def worker_env(
    request: pytest.FixtureRequest,
    sqlite_env: dict[str, str],
    redis_server: Callable[..., RedisServer],
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    if request.param == "sqlite":
        return sqlite_env
    url = redis_server().url()
    for key in ("CELERIAC_BROKER_URL", "CELERIAC_RESULT_BACKEND"):
        monkeypatch.setenv(key, url)
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def test_an_unreadable_message_with_a_readable_id_fails_its_result(app: Any, start_worker: Any) -> None:
    kit = (RedisBrokerKit if app.broker_url.startswith("redis") else SQLBrokerKit)(app.broker_url)

    async def put() -> None:
        broker = app.broker()
        for payload in RAW.values():
            await kit.put_raw(broker, "celery", payload)

    app.run(put())
    worker = start_worker("-c", "1", "-P", "threads")
    for task_id in ("raw-not-base64", "raw-bad-headers"):
        result = app.AsyncResult(task_id)
        with pytest.raises(DecodeError, match="unreadable message: message envelope"):
            result.get(timeout=15)
        assert result.state == "FAILURE"
    assert "not valid base64" in app.AsyncResult("raw-not-base64").traceback
    deadline = time.monotonic() + 10
    while log_lines(worker.log).count("message dead-lettered") < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert log_lines(worker.log).count("message dead-lettered") == 3

    async def dead() -> list[Any]:
        return await app.broker().dead_letters("celery")

    letters = app.run(dead())
    assert sorted(d.raw for d in letters) == sorted(RAW.values())
    from tests.integration import appmod

    assert appmod.add.delay(2, 2).get(timeout=30) == 4  # and it serves on


def log_lines(log: Path) -> str:
    return log.read_text(errors="replace")
