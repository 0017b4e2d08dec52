"""The autoscaler's rule (grow to the demand at once, shrink after a quiet keepalive) and the parsing of
``--autoscale``; the resizable slots it relies on."""

from __future__ import annotations

import asyncio
import time

import pytest

from celeriac import Celeriac
from celeriac.exceptions import ConfigurationError
from celeriac.testing import start_worker
from celeriac.worker import Worker
from celeriac.worker._autoscale import Autoscaler, parse_autoscale
from celeriac.worker._slots import Slots


class Fleet:
    """Stands in for the worker: its size, its demand, what it was resized to."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.demand = 0
        self.stats = {"received": 0}
        self.sizes: list[int] = []

    def resize(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.sizes.append(concurrency)

    def prefetch_slots_changed(self) -> None:
        pass


def scaler(fleet: Fleet, maximum: int = 4, minimum: int = 1, keepalive: float = 30.0) -> Autoscaler:
    return Autoscaler(fleet, maximum, minimum, keepalive)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"), [("10,3", (10, 3)), ("3,10", (10, 3)), ("10", (10, 0)), (" 4 , 4 ", (4, 4))]
)
def test_autoscale_reads_celerys_syntax(text: str, expected: tuple[int, int]) -> None:
    assert parse_autoscale(text) == expected


@pytest.mark.parametrize("text", ["", "ten", "1,2,3", "0", "-1,2", "4,x"])
def test_bad_autoscale_text_is_a_clear_error(text: str) -> None:
    with pytest.raises(ValueError, match="autoscale"):
        parse_autoscale(text)


def test_it_grows_to_the_demand_at_once_up_to_the_maximum() -> None:
    fleet = Fleet(1)
    auto = scaler(fleet)
    fleet.demand = 3
    auto.scale(now=1000.0)
    assert fleet.sizes == [3]
    fleet.demand = 9
    auto.scale(now=1001.0)
    assert fleet.sizes == [3, 4]
    auto.scale(now=1002.0)
    assert fleet.sizes == [3, 4]  # at the maximum already


def test_it_shrinks_to_the_demand_only_after_a_quiet_keepalive() -> None:
    fleet = Fleet(1)
    auto = scaler(fleet, keepalive=30.0)
    fleet.demand = 4
    auto.scale(now=1000.0)
    fleet.demand = 0
    auto.scale(now=1029.0)
    assert fleet.concurrency == 4  # not quiet for long enough
    fleet.stats["received"] = 5  # a task arrived: quiet starts again
    auto.scale(now=1029.5)
    auto.scale(now=1059.0)
    assert fleet.concurrency == 4
    fleet.demand = 2
    auto.scale(now=1060.0)
    assert fleet.concurrency == 2  # to the demand, not below
    fleet.demand = 0
    auto.scale(now=1100.0)
    assert fleet.concurrency == 1  # never below the minimum


def test_update_changes_the_range_and_brings_the_pool_into_it() -> None:
    fleet = Fleet(4)
    auto = scaler(fleet, maximum=4, minimum=1)
    assert auto.update(2, None) == (2, 1) and fleet.concurrency == 2
    assert auto.update(6, 3) == (6, 3) and fleet.concurrency == 3
    with pytest.raises(ValueError, match="min <= max"):
        auto.update(2, 5)
    assert (auto.maximum, auto.minimum) == (6, 3)
    assert auto.info() == {"max": 6, "min": 3, "current": 3, "qty": 0}


def test_a_keepalive_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="keepalive"):
        scaler(Fleet(1), keepalive=0)


def test_slots_grow_let_waiters_in_and_shrink_lets_holders_finish() -> None:
    async def scenario() -> None:
        slots = Slots(1)
        await slots.acquire()
        waiters = [asyncio.ensure_future(slots.acquire()) for _ in range(3)]
        await asyncio.sleep(0)
        assert slots.waiting == 3
        slots.resize(3)
        await asyncio.sleep(0)
        assert slots.held == 3 and slots.waiting == 1
        slots.resize(1)
        slots.release()
        slots.release()
        await asyncio.sleep(0)
        assert slots.held == 1 and slots.waiting == 1  # over the new limit until enough released
        slots.release()
        await asyncio.gather(*waiters)
        assert slots.held == 1 and slots.waiting == 0

    asyncio.run(scenario())


def test_a_cancelled_waiter_given_a_slot_passes_it_on() -> None:
    async def scenario() -> None:
        slots = Slots(1)
        await slots.acquire()
        first = asyncio.ensure_future(slots.acquire())
        second = asyncio.ensure_future(slots.acquire())
        await asyncio.sleep(0)
        slots.release()  # given to ``first``...
        first.cancel()  # ...which is cancelled before it runs
        await asyncio.gather(first, return_exceptions=True)
        await asyncio.wait_for(second, 1)
        assert slots.held == 1

    asyncio.run(scenario())


def test_a_worker_refuses_autoscale_on_the_solo_pool_and_a_bad_range() -> None:
    app = Celeriac("auto", broker="memory://auto", backend="memory://auto")
    with pytest.raises(ConfigurationError, match="solo pool"):
        Worker(app, pool="solo", autoscale=(2, 1))
    with pytest.raises(ConfigurationError, match="min <= max"):
        Worker(app, pool="threads", autoscale=(1, 2))
    worker = Worker(app, pool="threads", autoscale=(8, 2))
    assert worker.concurrency == 2 and worker.pool.concurrency == 2
    assert worker.prefetch_count == 8  # fetches for the maximum, so that a backlog shows


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_a_worker_autoscaled_from_zero_grows_to_run_a_task_and_goes_back_to_zero(pool: str) -> None:
    from tests.unit.worker.pools import poolapp

    app = poolapp.app
    app.conf.worker_autoscaler_keepalive = 0.5
    try:
        with start_worker(
            app, pool=pool, autoscale=(2, 0), app_path="tests.unit.worker.pools.poolapp"
        ) as worker:
            assert worker.concurrency == 0
            assert poolapp.add.delay(2, 3).get(timeout=30) == 5
            deadline = time.monotonic() + 10
            while worker.concurrency:
                assert time.monotonic() < deadline, "never shrank back to 0"
                time.sleep(0.05)
    finally:
        app.conf.worker_autoscaler_keepalive = 30.0
