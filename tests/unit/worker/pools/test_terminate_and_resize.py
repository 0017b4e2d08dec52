"""Terminating a running task (remote control's ``revoke(terminate=True)``) on every pool, and resizing
the pools that can be resized while they run."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest

from celeriac import signals, states
from celeriac.exceptions import TaskRevokedError
from celeriac.worker.pools.base import Job, Outcome, Pool
from celeriac.worker.pools.processes import ProcessPool
from tests.unit.worker.pools import poolapp
from tests.unit.worker.pools.test_pools import in_pool, job, make_pool


async def started(pool: Pool, one: Job) -> asyncio.Future[Outcome]:
    """``one`` running in ``pool`` (its ``on_start`` was called)."""
    began = asyncio.Event()
    running = asyncio.ensure_future(pool.run(one, began.set))
    await asyncio.wait_for(began.wait(), 30)
    await asyncio.sleep(0.05)  # past on_start: into the task's own code
    return running


def assert_revoked(outcome: Outcome, signum: int) -> None:
    assert outcome.status == states.REVOKED
    assert isinstance(outcome.exc, TaskRevokedError) and outcome.exc.args == ("terminated",)
    assert outcome.signum == signum
    assert "TaskRevokedError: terminated" in (outcome.traceback or "")


@pytest.mark.parametrize("kind", ["threads", "solo", "async"])
def test_a_sync_task_looping_in_python_is_terminated_at_once(kind: str) -> None:
    failures: list[Any] = []

    def on_failure(**kwargs: Any) -> None:
        failures.append(kwargs)

    signals.task_failure.connect(on_failure)

    async def scenario(pool: Pool) -> tuple[Outcome, float]:
        one = job(poolapp.swallows_exceptions, 30)
        running = await started(pool, one)
        begun = time.monotonic()
        assert pool.terminate(one.id, signal.SIGTERM)
        outcome = await running
        took = time.monotonic() - begun
        while pool.busy:  # the thread ends promptly: the exception lands between two short sleeps
            await asyncio.sleep(0.01)
        assert (await pool.run(job(poolapp.add, 2, 2))).value == 4  # its thread serves again
        return outcome, took

    try:
        outcome, took = in_pool(make_pool(kind), scenario)
    finally:
        signals.task_failure.disconnect(on_failure)
    assert_revoked(outcome, signal.SIGTERM)
    assert took < 1.0
    assert failures == []  # terminated is no failure of the task


def test_a_thread_blocked_in_c_returns_revoked_at_once_but_keeps_its_slot_until_the_call_returns() -> None:
    async def scenario(pool: Pool) -> None:
        one = job(poolapp.stuck, 1.0)
        running = await started(pool, one)
        begun = time.monotonic()
        assert pool.terminate(one.id, signal.SIGKILL)
        assert_revoked(await running, signal.SIGKILL)
        assert time.monotonic() - begun < 0.5
        assert pool.busy == 1  # still in time.sleep: nothing lands inside a C call
        while pool.busy:
            await asyncio.sleep(0.02)
        assert time.monotonic() - begun >= 0.8

    in_pool(make_pool("threads"), scenario)


@pytest.mark.parametrize(
    ("kind", "limit"), [(k, limit) for k in ("threads", "async") for limit in (None, 30.0)]
)
def test_an_async_task_is_cancelled_and_ends_revoked(kind: str, limit: float | None) -> None:
    async def scenario(pool: Pool) -> None:
        one = job(poolapp.async_sleepy, 30, time_limit=limit)
        running = await started(pool, one)
        begun = time.monotonic()
        assert pool.terminate(one.id, signal.SIGTERM)
        assert_revoked(await running, signal.SIGTERM)
        assert time.monotonic() - begun < 0.5
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
        assert pool.busy == 0
        assert (await pool.run(job(poolapp.async_add, 1, 2))).value == 3

    in_pool(make_pool(kind, 2), scenario)


@pytest.mark.parametrize("limit", [None, 30.0])
def test_an_async_task_that_swallows_its_cancellation_still_ends_revoked(limit: float | None) -> None:
    async def scenario(pool: Pool) -> None:
        one = job(poolapp.async_stubborn, 30, time_limit=limit)
        running = await started(pool, one)
        assert pool.terminate(one.id, signal.SIGTERM)
        assert_revoked(await running, signal.SIGTERM)
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    in_pool(make_pool("async", 2), scenario)


@pytest.mark.parametrize("kind", ["processes", "threads", "async", "solo"])
def test_terminate_answers_false_for_a_task_not_running_here(kind: str) -> None:
    async def scenario(pool: Pool) -> bool:
        return pool.terminate("no-such-task", signal.SIGTERM)

    assert in_pool(make_pool(kind), scenario) is False


def test_the_processes_pool_reports_the_signal_it_sent() -> None:
    async def scenario(pool: Pool) -> None:
        one = job(poolapp.sleepy, 30)
        running = await started(pool, one)
        assert pool.terminate(one.id, signal.SIGTERM)
        assert_revoked(await running, signal.SIGKILL)  # children ignore SIGTERM: they are killed

    in_pool(make_pool("processes"), scenario)


# -- resizing ------------------------------------------------------------------------------------------


async def peak(pool: Pool, jobs: int, seconds: float = 0.3) -> int:
    """How many of ``jobs`` sleepy jobs, all given at once, started together."""
    began: list[float] = []
    await asyncio.gather(
        *(pool.run(job(poolapp.sleepy, seconds), lambda: began.append(time.monotonic())) for _ in range(jobs))
    )
    return sum(1 for t in began if t - min(began) < seconds / 2)


@pytest.mark.parametrize("kind", ["threads", "async", "processes"])
def test_a_pool_grows_and_shrinks_while_it_runs(kind: str) -> None:
    async def scenario(pool: Pool) -> None:
        assert await peak(pool, 4) == 1
        pool.resize(3)
        assert pool.concurrency == 3 and pool.info()["concurrency"] == 3
        if isinstance(pool, ProcessPool):
            await until(lambda: len(pool.info()["processes"]) == 3)
        assert await peak(pool, 6) == 3
        pool.resize(2)
        if isinstance(pool, ProcessPool):
            await until(lambda: len(pool.info()["processes"]) == 2 and len(pool._children) == 2)
        assert await peak(pool, 4) == 2

    in_pool(make_pool(kind, 1), scenario)


async def until(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "never came true"
        await asyncio.sleep(0.02)


def test_a_busy_child_retires_after_its_job_and_is_not_replaced() -> None:
    async def scenario(pool: Pool) -> None:
        assert isinstance(pool, ProcessPool)
        busy = [asyncio.ensure_future(pool.run(job(poolapp.sleepy, 0.5))) for _ in range(2)]
        await asyncio.sleep(0.2)
        pool.resize(1)
        pids = {o.value for o in await asyncio.gather(*busy)}
        assert all(o is not None for o in pids)  # both finished: a shrink never stops a running job
        await until(lambda: len(pool._children) == 1)
        await asyncio.sleep(0.3)
        assert len(pool._children) == 1  # no replacement was started
        assert (await pool.run(job(poolapp.add, 1, 1))).value == 2

    in_pool(make_pool("processes", 2), scenario)


def test_the_solo_pool_cannot_be_resized() -> None:
    async def scenario(pool: Pool) -> None:
        with pytest.raises(NotImplementedError, match="one task at a time"):
            pool.resize(2)

    in_pool(make_pool("solo"), scenario)


def test_an_empty_processes_pool_starts_and_grows() -> None:
    async def scenario(pool: Pool) -> None:
        assert pool.info()["processes"] == []
        pool.resize(1)
        assert (await pool.run(job(poolapp.add, 2, 3))).value == 5

    in_pool(make_pool("processes", 0), scenario)


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_a_job_terminated_while_it_waits_for_a_slot_never_starts(kind: str) -> None:
    async def scenario(pool: Pool) -> None:
        first = await started(pool, job(poolapp.sleepy, 0.5))
        began: list[bool] = []
        second = job(poolapp.add, 1, 1)
        waiting = asyncio.ensure_future(pool.run(second, lambda: began.append(True)))
        await asyncio.sleep(0.05)
        assert pool.terminate(second.id, signal.SIGTERM)
        assert_revoked(await waiting, signal.SIGTERM)
        assert (await first).status == states.SUCCESS
        assert began == []

    in_pool(make_pool(kind, 1), scenario)
