"""Dead-letter retention: a worker trims the dead letters to ``broker_dead_letter_max`` and
``broker_dead_letter_expires``, and a broker that cannot purge them does not stop it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from celeriac.app import Celeriac
from celeriac.brokers.base import Broker
from celeriac.memory.broker import MemoryBroker
from celeriac.middleware.dead_letters import DeadLetterRetention
from celeriac.testing import start_worker


@pytest.fixture
def celeriac_config() -> dict[str, Any]:
    return {"broker_dead_letter_max": 3, "broker_dead_letter_expires": 0}


@pytest.fixture(autouse=True)
def trim_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(DeadLetterRetention, "first_after", 0.0)
    monkeypatch.setattr(DeadLetterRetention, "interval", 0.1)


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def bury(app: Celeriac, count: int, start: int = 0) -> None:
    """Dead-letters ``count`` messages through a queue no worker consumes, so a running worker cannot
    take them first."""

    async def main() -> None:
        broker = app.broker()
        for n in range(start, start + count):
            await app.asend_task("proj.nothing", task_id=f"d-{n}", queue="graveyard")
            [got] = await broker.fetch(["graveyard"], 1, 1.0)
            await broker.reject(got, requeue=False, reason="poison")

    asyncio.run(main())


def test_a_worker_keeps_the_newest_dead_letters(celeriac_app: Celeriac) -> None:
    bury(celeriac_app, 5)
    with start_worker(celeriac_app):
        eventually(lambda: len(celeriac_app.dead_letters()) == 3)
        bury(celeriac_app, 2, start=5)  # and again a moment later
        eventually(lambda: [d.task_id for d in celeriac_app.dead_letters()] == ["d-6", "d-5", "d-4"])


def test_a_broker_that_cannot_purge_is_left_alone(
    celeriac_app: Celeriac, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(MemoryBroker, "purge_dead_letters", Broker.purge_dead_letters)
    bury(celeriac_app, 5)
    with caplog.at_level(logging.INFO), start_worker(celeriac_app):
        eventually(lambda: "the broker cannot purge dead letters" in caplog.text)
    assert len(celeriac_app.dead_letters()) == 5
    with pytest.raises(NotImplementedError, match="MemoryBroker cannot requeue or purge its dead letters"):
        celeriac_app.purge_dead_letters()
